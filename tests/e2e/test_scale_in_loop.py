"""Out under load, back in at idle, with nothing called by hand (issue 14's must-show): the real Prometheus fires
the scale-out rule, then the scale-in rule (direction="in"); Alertmanager calls the webhook, the evaluator
re-decides after the warm-up, and the same Jenkins job drains, removes and destroys the VM the portal added.
"""

import pytest

from autoscaling.models import IpAllocation
from events.models import ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance
from tests.e2e.conftest import wait_for, waiting

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome
WARM_UP = 20  # the scale-out cooldown: a new VM warms up that long before it may be removed


def test_a_scale_out_under_load_is_undone_at_idle_back_to_the_starting_size(e2e, schedules):
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=WARM_UP, max_instances=4,
                    scale_in_threshold=20, scale_in_duration_seconds=3, scale_in_cooldown_seconds=5)  # fmt: skip
    seeded = e2e.seed(plan)
    vm_port = e2e.lab.info("metrics")["vm_port"]
    seeded_targets = {f"{address}:{vm_port}" for address in plan.monitored}
    wait_for("the seeded VMs to be scraped", lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded_targets, "up"))
    # Both rules are on Prometheus, both routed to the service's webhook.
    for direction in ("out", "in"):
        assert e2e.amtool_route(service=plan.service, autoscale="true", direction=direction).endswith(plan.service)

    # Out: 160 % of one VM over two VMs (80 % each).
    e2e.load(plan, 160)
    out = e2e.wait_event(plan, timeout=60)
    assert (out.action, out.status) == (ScaleOutEvent.Action.SCALE_OUT, Status.SUCCEEDED), (out.error, e2e.console(out))
    (ip,) = out.vm_ips
    (name,) = out.vm_names
    new_target = f"{ip}:{vm_port}"
    wait_for("the new VM to be scraped", lambda: new_target in e2e.scrape_targets(plan), timeout=30)

    # In: idle (5 % of one VM over three). The scale-in alert fires after 3 s, but the new VM warms up first.
    e2e.load(plan, 5)
    timeout = WARM_UP + 2 * e2e.settings.EVALUATOR_INTERVAL + 90
    waiting(e2e, plan, "the scale-in to finish", lambda: _finished(e2e, plan, 1), timeout=timeout)
    scale_in = e2e.events(plan)[1]
    assert (scale_in.action, scale_in.status) == (ScaleOutEvent.Action.SCALE_IN, Status.SUCCEEDED), (
        scale_in.error,
        e2e.console(scale_in),
    )
    assert scale_in.source == ScaleOutEvent.Source.ALERT and scale_in.alert_name == "AutoscaleLowCpu"
    assert scale_in.alert_labels["direction"] == "in"
    # The VM the portal added went, never a seeded (adopted, protected) one.
    (removed,) = ManagedInstance.objects.filter(removed_by_event=scale_in)
    assert (removed.vm_name, removed.ip_address, removed.state) == (name, ip, ManagedInstance.State.REMOVED)
    assert (scale_in.created_at - removed.in_service_at).total_seconds() >= WARM_UP
    outcomes = list(ScalingDecision.objects.filter(service_name=plan.service).values_list("outcome", flat=True))
    assert Outcome.SCALE_IN in outcomes
    assert name not in e2e.vms(plan)
    assert f"{ip}:8080" not in e2e.f5_members(plan)
    assert IpAllocation.objects.get(pool=seeded.pool, address=ip).state == IpAllocation.State.RELEASED
    wait_for(
        "the scrape targets to be the seeded ones again",
        lambda: set(e2e.scrape_targets(plan)) == seeded_targets,
        timeout=30,
    )
    assert ManagedInstance.objects.filter(config=seeded.config, state="in_service").count() == 2

    # Back at the starting size, still idle: nothing more goes (the two left are protected), nothing comes back.
    decided = scale_in.decisions.get().pk
    waiting(
        e2e,
        plan,
        "the decision that no instance may go",
        lambda: ScalingDecision.objects.filter(
            service_name=plan.service, outcome=Outcome.NO_CANDIDATE, pk__gt=decided
        ).exists(),
        timeout=2 * e2e.settings.EVALUATOR_INTERVAL + 20,
    )
    assert len(e2e.events(plan)) == 2, e2e.diagnose(plan)


def _finished(e2e, plan, index):
    events = e2e.events(plan)
    return len(events) > index and events[index].status in ScaleOutEvent.FINAL_STATUSES
