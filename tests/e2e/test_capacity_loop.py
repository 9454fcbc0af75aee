"""The capacity loop through the whole lab: a load that keeps the alert firing takes the service to its maximum one
step per cooldown, the webhook making the first step and the evaluator the next ones (issue 13's must-show).

With PostgreSQL the evaluator runs as it does in production: the migrations' schedule in the real
`manage.py qcluster`, every EVALUATOR_INTERVAL (15 s). On SQLite (no cluster process can share the in-memory test
database) the test runs the passes itself, one a second, while it waits.
"""

import time

import pytest

from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance
from tests.e2e.conftest import wait_for, waiting

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome
COOLDOWN = 20


def test_a_load_three_vms_cannot_carry_takes_the_service_from_2_to_its_max_of_4(e2e, schedules):
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=COOLDOWN, max_instances=4)
    e2e.seed(plan)
    vm_port = e2e.lab.info("metrics")["vm_port"]
    seeded = {f"{address}:{vm_port}" for address in plan.monitored}
    wait_for("the seeded VMs to be scraped", lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded, "up"))
    assert ManagedInstance.objects.filter(config__service_name=plan.service, state="in_service").count() == 2

    # 330 % of one VM: 100 % on 2 or 3 VMs, 82.5 % on 4: above the 70 % threshold whatever the portal does.
    e2e.load(plan, 330)
    started = time.monotonic()

    def events_finished(n):
        events = e2e.events(plan)
        return len(events) >= n and all(e.status in (Status.SUCCEEDED, Status.FAILED) for e in events[:n])

    interval = e2e.settings.EVALUATOR_INTERVAL
    waiting(e2e, plan, "the first scale-out", lambda: events_finished(1), timeout=60)
    waiting(e2e, plan, "the second scale-out", lambda: events_finished(2), timeout=COOLDOWN + interval + 60)
    first, second = e2e.events(plan)[:2]
    assert first.status == second.status == Status.SUCCEEDED, (first.error, second.error, e2e.diagnose(plan))
    # One step per cooldown: the second began once the first's cooldown was over, within one evaluator interval
    # (plus the time the first took to finish, if longer).
    gap = (second.created_at - first.created_at).total_seconds()
    first_took = (first.finished_at - first.created_at).total_seconds()
    assert COOLDOWN <= gap <= max(COOLDOWN, first_took) + interval + 5, (gap, first_took)
    # The first from the webhook, or from the evaluator when its pass saw the firing alert in Alertmanager before
    # Alertmanager's group wait sent the notification (the webhook's then finds the cooldown): either is right.
    assert first.source == ScaleOutEvent.Source.ALERT
    assert second.source == ScaleOutEvent.Source.ALERT and second.notification is None  # the evaluator
    assert second.alert_starts_at == first.alert_starts_at  # the same alert, still firing

    # At the maximum: no third event, however long the alert keeps firing.
    waiting(
        e2e,
        plan,
        "the maximum to be recorded",
        lambda: ScalingDecision.objects.filter(service_name=plan.service, outcome=Outcome.AT_MAX).exists(),
        timeout=COOLDOWN + interval + 20,
    )
    assert len(e2e.events(plan)) == 2, e2e.diagnose(plan)
    instances = ManagedInstance.objects.filter(config__service_name=plan.service, state="in_service")
    assert instances.count() == 4
    clones = first.vm_names + second.vm_names
    assert len(clones) == 2 and set(clones) <= set(e2e.vms(plan))
    assert {f"{ip}:8080" for ip in first.vm_ips + second.vm_ips} <= set(e2e.f5_members(plan))
    # The alert never resolved on the way.
    assert e2e.prometheus_alerts(plan, state="firing")
    assert not AlertNotification.objects.filter(service_name=plan.service, status="resolved").exists()
    assert time.monotonic() - started < 180
