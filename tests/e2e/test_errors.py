"""The seed's error scenarios (5.2) through the whole loop: an alert reaches the webhook, the portal decides and
triggers, the pipeline fails at a step and undoes what it did. Afterwards nothing of the event is left (no VM, no
F5 member, no address held, no extra scrape target) and the reason is on the event, in its API and its admin page.

The faults are injected as the pipeline's own tests do (tests/pipeline/test_pipeline.py); here they meet the alert
path, the task cluster and provisioning as well."""

import pytest

from autoscaling import ipam
from autoscaling.models import IpAllocation
from demo import wiring
from events.models import EventAction, ScaleOutEvent, ScalingDecision
from lab.core import free_port
from tests.e2e.conftest import firing_payload, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Step = EventAction.Step
UNDO = [Step.ROLLBACK_F5, Step.ROLLBACK_VM, Step.ROLLBACK_IP]


def _template_missing(e2e, plan, seeded):
    e2e.vcenter.delete_template(seeded.template.vcenter_moid)


def _pool_exhausted(e2e, plan, seeded):
    # Another system holds every address of the pool (reservations without an event of this service).
    while True:
        try:
            ipam.ip_reserve(pool=seeded.pool, note="held by another system")
        except ipam.PoolExhausted:
            return


def _f5_unreachable(e2e, plan, seeded):
    wiring.lab_pipeline_prepare(
        e2e.lab,
        job=seeded.config.jenkins_job_name,
        f5_pool=plan.f5_pool,
        agent_env={"F5_URL": f"http://127.0.0.1:{free_port()}"},
    )


def _member_never_healthy(e2e, plan, seeded):
    e2e.f5.configure(address_states={seeded.pool.first_address: "down"})
    wiring.lab_pipeline_prepare(
        e2e.lab, job=seeded.config.jenkins_job_name, f5_pool=plan.f5_pool, agent_env={"F5_HEALTH_TIMEOUT": "1.5"}
    )


CASES = {
    # case: (set-up after seeding, extra config fields, failing step, words of the reason)
    "template_missing": (_template_missing, {}, Step.VM_CLONE, "does not exist in vCenter"),
    "ip_pool_exhausted": (_pool_exhausted, {}, Step.IP_ALLOCATE, "exhausted"),
    "f5_unreachable": (_f5_unreachable, {}, Step.F5_ADD, "could not be reached"),
    "pipeline_failure_rolled_back": (_member_never_healthy, {}, Step.HEALTH_CHECK, "is not up after"),
    "vm_creation_failure_cleaned_up": (None, {"datastore": "NoSuchDatastore"}, Step.VM_CLONE, "NoSuchDatastore"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failure_in_the_loop_leaves_nothing_behind_and_says_why(e2e, admin_client, case):
    setup, extra, failed_step, reason = CASES[case]
    plan = e2e.plan(instances=1, cooldown_seconds=0, extra=extra)
    seeded = e2e.seed(plan)
    targets_before = set(e2e.scrape_targets(plan)) or set(seeded.config.monitored_instances)
    if setup:
        setup(e2e, plan, seeded)
    held_before = set(
        IpAllocation.objects.filter(pool=seeded.pool, state__in=["reserved", "in_use"]).values_list("pk", flat=True)
    )

    answer = e2e.post_webhook(plan.service, firing_payload(plan.service))
    assert answer.status_code == 202 and answer.json()["status"] == "accepted", answer.text
    event = e2e.wait_event(plan)

    # The event failed at the step, with the reason; every undo ran.
    assert event.status == ScaleOutEvent.Status.ROLLED_BACK, (event.status, event.error, e2e.console(event))
    assert event.failed_step == failed_step and reason in event.error, (event.failed_step, event.error)
    steps = {a.step: a for a in EventAction.objects.filter(event=event)}
    assert steps[failed_step].status == EventAction.Status.FAILED and reason in steps[failed_step].message
    for step in UNDO:
        assert steps[step].status in (EventAction.Status.SUCCEEDED, EventAction.Status.SKIPPED), steps[step].message
    assert ScalingDecision.objects.get(event=event).outcome == ScalingDecision.Outcome.SCALE_OUT

    # Nothing is left: no VM, no F5 member, no address of the event held, no scrape target added.
    assert e2e.vms(plan) == {}
    assert e2e.f5_members(plan) == {}
    held = IpAllocation.objects.filter(pool=seeded.pool, state__in=["reserved", "in_use"])
    assert set(held.values_list("pk", flat=True)) == held_before
    assert not held.filter(event=event).exists()
    wait_for("the scrape targets to settle", lambda: set(e2e.scrape_targets(plan)) == targets_before, timeout=10)

    # The portal says so itself: its own alert fires in Prometheus, which scrapes its /metrics.
    fired = wait_for(
        "the portal's alert VmautoscaleScaleOutFailed",
        lambda: [
            a for a in e2e.prometheus_alerts(plan, "firing") if a["labels"]["alertname"] == "VmautoscaleScaleOutFailed"
        ],
        timeout=30,
    )
    assert fired[0]["labels"]["portal_alert"] == "true" and fired[0]["labels"]["action"] == "scale_out"

    # The reason is visible to the operator: in the events API and on the event's admin page.
    detail = admin_client.get(f"/api/autoscaling/events/{event.pk}").json()
    assert detail["status"] == "rolled_back" and reason in detail["error"]
    page = admin_client.get(f"/admin/events/scaleoutevent/{event.pk}/change/")
    assert page.status_code == 200 and reason in page.content.decode()
