"""Replay against the live loop (issue 18's must-show): the live loop scales a service out under load and back in
at idle (the metrics stand-in feeds the lab's real Prometheus; the real rules fire; Alertmanager, the webhook, the
evaluator, decide and the pipeline act). Then the replay reads that same recorded series back from Prometheus and
replays the saved policy through autoscaling.policy.decide with the fleet model (the provisioning time measured
on this very scale-out, the drain on this scale-in): it must make the same decisions at about the same times.

"About": the live loop acts a little after the rule fires (Alertmanager's delivery, the evaluator's 15 s tick
for the scale-in that waits out the warm-up); the replay decides at every 1 s point.
"""

import pytest

from autoscaling import replay, replay_service
from autoscaling.models import AutoscalingConfig
from events.models import ScaleOutEvent, ScalingDecision
from tests.e2e.conftest import wait_for, waiting

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
WARM_UP = 20


# The whole live loop (out, warm-up, in) and the lab's start on a busy machine: more than the default 300 s.
@pytest.mark.timeout(900)
def test_the_recorded_series_replays_to_the_decisions_the_live_loop_made(e2e, schedules):
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=WARM_UP, max_instances=4,
                    scale_in_threshold=20, scale_in_duration_seconds=3, scale_in_cooldown_seconds=5)  # fmt: skip
    seeded = e2e.seed(plan)
    vm_port = e2e.lab.info("metrics")["vm_port"]
    seeded_targets = {f"{address}:{vm_port}" for address in plan.monitored}
    wait_for("the seeded VMs to be scraped", lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded_targets, "up"))

    # The live loop: out under load (80 % each on two VMs), back in at idle.
    e2e.load(plan, 160)
    out = e2e.wait_event(plan, timeout=60)
    assert (out.action, out.status) == (ScaleOutEvent.Action.SCALE_OUT, Status.SUCCEEDED), (out.error, e2e.console(out))
    (ip,) = out.vm_ips
    wait_for("the new VM to be scraped", lambda: f"{ip}:{vm_port}" in e2e.scrape_targets(plan), timeout=60)
    e2e.load(plan, 5)

    def scale_in_done():
        events = e2e.events(plan)
        return len(events) > 1 and events[1].status in ScaleOutEvent.FINAL_STATUSES

    waiting(e2e, plan, "the scale-in", scale_in_done, timeout=WARM_UP + 2 * e2e.settings.EVALUATOR_INTERVAL + 90)
    wait_for("the scrape targets to be the seeded ones", lambda: set(e2e.scrape_targets(plan)) == seeded_targets)
    live = e2e.events(plan)
    assert [(e.action, e.status, e.vm_count) for e in live] == [
        ("scale_out", Status.SUCCEEDED, 1),
        ("scale_in", Status.SUCCEEDED, 1),
    ], e2e.diagnose(plan)

    # The replay of the same series: 1 s points (the rules' resolution here) over the last hour, which holds the
    # whole life of this service.
    config = AutoscalingConfig.objects.get(pk=seeded.config.pk)
    report = replay_service.config_replay(config=config, period="1h", step=1)
    assert report.provisioning_measured == 1
    assert report.provisioning_seconds == pytest.approx((out.finished_at - out.created_at).total_seconds())
    events = report.current.result.events
    assert [(e.direction, e.count) for e in events] == [(replay.OUT, 1), (replay.IN, 1)], (
        [(e.at, e.direction, e.message) for e in events],
        e2e.diagnose(plan),
    )
    tolerance = e2e.settings.EVALUATOR_INTERVAL + 10
    for would_be, happened in zip(events, live, strict=True):
        assert abs(would_be.at - happened.created_at.timestamp()) <= tolerance, (would_be, happened.created_at)
    # The same reasons: the live decisions' message ids are the replay's (one decide for both).
    live_reasons = [
        ScalingDecision.objects.get(event=event).reason_msgid for event in live
    ]  # the decision that created each event
    assert [e.message for e in events] == live_reasons
    # The replayed fleet followed the recorded one: 2, 3, 2 VMs.
    sizes = [n for _ts, n in report.current.result.fleet]
    changes = [n for i, n in enumerate(sizes) if i == 0 or n != sizes[i - 1]]
    assert changes == [2, 3, 2]
