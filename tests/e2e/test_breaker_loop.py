"""The circuit breaker through the whole lab (issue 15's must-show): a template that cannot be cloned, under a load
that keeps the alert firing while the evaluator re-decides with no cooldown, makes exactly 3 scale-outs (the
webhook's or the evaluator's), all rolled back; then the breaker is open and nothing more is triggered. No VM is
left in vCenter, no member in F5, no address held, and the orphan sweep finds nothing.

With PostgreSQL the evaluator runs in the real task cluster (every EVALUATOR_INTERVAL); on SQLite the test runs the
passes itself while it waits (tests/e2e/conftest.py `waiting`).
"""

import time

import pytest

from autoscaling.models import CircuitBreaker, IpAllocation
from events import evaluator
from events.models import ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance
from fleet.orphans import orphans_sweep
from tests.e2e.conftest import waiting

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome


def test_a_template_that_cannot_be_cloned_creates_at_most_3_vms_under_sustained_load(e2e, schedules):
    # Room for 6 more VMs, no cooldown: only the breaker stops the attempts.
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=0, max_instances=8)
    seeded = e2e.seed(plan)
    e2e.vcenter.delete_template(seeded.template.vcenter_moid)  # every clone fails
    e2e.load(plan, 330)

    def breaker_open():
        return ScalingDecision.objects.filter(service_name=plan.service, outcome=Outcome.BREAKER_OPEN).exists()

    interval = e2e.settings.EVALUATOR_INTERVAL
    waiting(e2e, plan, "the breaker to open", breaker_open, timeout=3 * (60 + interval) + 30)

    # The alert keeps firing and the evaluator keeps deciding: nothing more is triggered.
    until = time.monotonic() + max(2 * interval, 10)
    while time.monotonic() < until:
        if e2e.cluster_pid is None:
            evaluator.evaluator_pass()
        time.sleep(1)
    assert e2e.prometheus_alerts(plan, state="firing"), "the load must keep the alert firing"

    events = e2e.events(plan)
    assert len(events) == 3, e2e.diagnose(plan)
    assert all(e.status in (Status.ROLLED_BACK, Status.FAILED) for e in events), [(e.status, e.error) for e in events]
    assert all(e.vm_count == 1 for e in events)
    assert CircuitBreaker.objects.get(config=seeded.config).failures == 3
    held = ScalingDecision.objects.filter(service_name=plan.service, outcome=Outcome.BREAKER_OPEN).first()
    assert "the last 3 scale-outs" in held.reason_text

    # At most 3 VMs were ever attempted, none is left anywhere.
    created = ManagedInstance.objects.filter(config=seeded.config, origin=ManagedInstance.Origin.CREATED)
    assert created.count() <= 3
    assert not created.filter(state__in=ManagedInstance.LIVE_STATES + (ManagedInstance.State.FAILED,)).exists()
    assert e2e.vms(plan) == {}
    assert e2e.f5_members(plan) == {}
    assert not IpAllocation.objects.filter(pool=seeded.pool, event__in=events, state__in=["reserved", "in_use"])
    sweep = orphans_sweep(service=plan.service)
    assert sweep.found == [] and not sweep.errors, (sweep.found, sweep.errors)
