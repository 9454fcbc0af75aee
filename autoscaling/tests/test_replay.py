"""The replay's simulation (autoscaling/replay.py), pure: a series and a policy in, the would-be events out."""

import math

import pytest

from autoscaling import policy, replay

MIN = 60.0
T0 = 1_700_000_000.0


def step_policy(**kwargs):
    values = {
        "min_instances": 1,
        "max_instances": 4,
        "step": 1,
        "cooldown_seconds": 300,
        "scale_in_step": 1,
        "scale_in_cooldown_seconds": 300,
        "service_name": "web",
    }
    return policy.Policy(**{**values, **kwargs})


RULE = replay.Rule(threshold=70, duration_seconds=120, scale_in_threshold=20, scale_in_duration_seconds=300)


def series(values, start=T0, step=MIN):
    return [(start + i * step, v) for i, v in enumerate(values)]


def run(values, *, counts=2, provisioning=120, drain=60, rule=RULE, **policy_kwargs):
    recorded_counts = counts if isinstance(counts, list) else [(T0, counts)]
    return replay.replay(
        policy=step_policy(**policy_kwargs),
        rule=rule,
        points=series(values),
        recorded_counts=recorded_counts,
        step=MIN,
        provisioning_seconds=provisioning,
        drain_seconds=drain,
    )


def test_the_alert_fires_after_its_duration_and_the_new_vm_counts_after_the_provisioning_time():
    # 2 VMs at 90 %: above 70 from the first step; `for: 120s` fires at the third step (t = 120 s).
    result = run([90] * 10, provisioning=180)
    (event,) = result.events[:1]
    assert (event.at - T0, event.direction, event.count, event.source) == (120, replay.OUT, 1, "alert")
    assert event.message.startswith("Scale out by %(count)d VM(s)")  # decide's own message id, untranslated
    # In service 180 s after the decision (t = 300 s), then the load spreads over 3 VMs: 2 x 90 / 3 = 60 %.
    fleet = dict((ts - T0, n) for ts, n in result.fleet)
    assert (fleet[240], fleet[300]) == (2, 3)
    load = dict((ts - T0, v) for ts, v in result.load)
    assert load[240] == 90 and load[300] == pytest.approx(60)
    # Below the threshold once spread: one scale-out only.
    assert result.scale_outs == 1


def test_a_gap_in_the_series_resets_the_pending_alert():
    result = run([90, 90, math.nan, 90, 90, 10, 10])
    assert result.events == []  # never above for 120 s in a row


def test_the_cooldown_and_the_maximum_hold_back_scale_outs():
    # The recorded load is on 1 VM at 400 %: however many VMs are added, it stays above 70 % (400/4 = 100).
    result = run([400] * 40, counts=1, provisioning=60, cooldown_seconds=300, max_instances=4)
    times = [event.at - T0 for event in result.events]
    assert times == [120, 420, 720]  # every cooldown, until max (1 + 3 = 4)
    assert result.fleet[-1][1] == 4


def test_scale_in_leaves_the_count_at_once_but_serves_load_until_its_drain():
    # 3 VMs at 10 %: below 20 for 300 s fires the scale-in alert at t = 300 s.
    result = run([10] * 12, counts=3, drain=120, min_instances=1, scale_in_cooldown_seconds=600)
    (event,) = result.events
    assert (event.at - T0, event.direction, event.count) == (300, replay.IN, 1)
    fleet = dict((ts - T0, n) for ts, n in result.fleet)
    load = dict((ts - T0, v) for ts, v in result.load)
    assert fleet[360] == 2
    assert load[360] == pytest.approx(10)  # still draining: the load spreads over 3
    assert load[420] == pytest.approx(15)  # drained: 3 x 10 / 2


def test_vm_hours_and_minutes_above_the_threshold():
    result = run([90] * 60, counts=2, provisioning=120, cooldown_seconds=3600, max_instances=2)
    # At max from the start: nothing added, 2 VMs for 60 minutes, always above.
    assert result.events == []
    assert result.vm_hours == pytest.approx(2.0)
    assert result.recorded_vm_hours == pytest.approx(2.0)
    assert result.minutes_above == pytest.approx(60)
    assert result.recorded_minutes_above == pytest.approx(60)


def test_the_replayed_fleet_lowers_the_minutes_above_against_the_recorded_ones():
    result = run([90] * 60, counts=2, provisioning=60, cooldown_seconds=300, max_instances=4)
    assert result.scale_outs == 1
    assert result.recorded_minutes_above == pytest.approx(60)
    assert result.minutes_above == pytest.approx(3)  # t = 0, 60, 120: above until the VM counts at 180
    assert result.vm_hours > result.recorded_vm_hours


def test_a_recorded_count_change_is_followed():
    # Recorded: 2 VMs, then 4 from t = 300 s on (someone added VMs): 80 % on 4 is 160 % of two-VM load, ...
    counts = [(T0, 2), (T0 + 300, 4)]
    result = run([50] * 5 + [80] * 5, counts=counts, max_instances=2)
    load = dict((ts - T0, v) for ts, v in result.load)
    assert load[0] == 50 and load[300] == pytest.approx(160)  # ... which the replay's 2 VMs carry
    assert dict(result.recorded_fleet)[T0 + 300] == 4


def test_target_tracking_adds_what_the_formula_asks_in_one_event():
    result = replay.replay(
        policy=step_policy(
            type=policy.TARGET_TRACKING, target_value=50, max_instances=6, scale_in_duration_seconds=300
        ),
        rule=RULE,
        points=series([90] * 5),
        recorded_counts=[(T0, 2)],
        step=MIN,
        provisioning_seconds=600,
        drain_seconds=60,
    )
    (event,) = result.events
    assert (event.at, event.count, event.source) == (T0, 2, "metric")  # ceil(2 x 90 / 50) = 4: +2
    assert "desired ceil" in event.message


def test_every_step_is_the_decision_decide_gives_for_its_inputs():
    """One function: the replay's actions are exactly where decide(**decide_inputs(...)) acts, recomputed here
    from the replay's own fleet, signal and clock at each step."""
    points = series([90] * 20 + [5] * 30)
    pol = step_policy(cooldown_seconds=240, scale_in_cooldown_seconds=240)
    result = replay.replay(
        policy=pol, rule=RULE, points=points, recorded_counts=[(T0, 2)], step=MIN,
        provisioning_seconds=120, drain_seconds=60,
    )  # fmt: skip
    assert result.decisions == len(points)
    assert result.scale_outs >= 1 and result.scale_ins >= 1
    assert result.actions == tuple((e.at, e.direction) for e in result.events)
    # Replaying the first k steps gives the same first events: no decision depends on the future.
    half = replay.replay(
        policy=pol, rule=RULE, points=points[:25], recorded_counts=[(T0, 2)], step=MIN,
        provisioning_seconds=120, drain_seconds=60,
    )  # fmt: skip
    assert half.events == [e for e in result.events if e.at <= points[24][0]]


def test_decide_inputs_maps_the_replayed_fleet_onto_the_decision():
    fleet = replay._Fleet(in_service=3, creating=[(T0 + 60, 2, 7)], draining=[(T0 + 30, 1)])
    fleet.last_scale_out_at = replay._when(T0 - 10)
    inputs = replay.decide_inputs(
        policy=step_policy(), fleet=fleet, signal=policy.Signal.alert(), now=replay._when(T0), protected=1
    )
    assert inputs["fleet"] == policy.Fleet(in_service=3, creating=2, known=True, removable=2)
    assert inputs["active_event_id"] == 7
    assert inputs["now"].timestamp() == T0
    assert inputs["last_action_at"].timestamp() == T0 - 10
    decision = policy.decide(**inputs)
    assert decision.outcome == policy.COOLDOWN


def test_an_empty_series_replays_to_nothing():
    result = run([])
    assert (result.events, result.fleet, result.vm_hours) == ([], [], 0.0)
