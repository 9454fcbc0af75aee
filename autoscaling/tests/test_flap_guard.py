"""The flap guard and dry-run, pure: the threshold check's arithmetic, the run-time hold of scale-in after out, in,
out within an hour (autoscaling.policy.decide's `recent_actions`), and the dry-run form of a decision."""

from datetime import UTC, datetime, timedelta

import pytest

from autoscaling import flapping, policy
from autoscaling.flapping import IN, OUT
from autoscaling.policy import Fleet, Policy, Signal, decide

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
SCALE_IN = Policy(
    service_name="web", min_instances=1, max_instances=6, cooldown_seconds=60, scale_in_cooldown_seconds=60
)


def minutes_ago(*pairs):
    """(minutes ago, direction) pairs as (time, direction)."""
    return tuple((NOW - timedelta(minutes=m), d) for m, d in pairs)


def scale_in(recent, *, signal=None, pol=SCALE_IN, fleet=None):
    return decide(
        policy=pol,
        fleet=fleet or Fleet(4, 0),
        signal=signal or Signal.idle(),
        last_action_at=None,
        active_event_id=None,
        now=NOW,
        recent_actions=recent,
    )


def shown(decision):
    params = {k: (v["msgid"] % v["params"] if isinstance(v, dict) else v) for k, v in decision.params.items()}
    return decision.message % params


# --- the threshold check ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "high, low, min_, max_, step, flap",
    [
        # 2 VMs at 40 % -> 1 VM at 80 %: not above 80 (the rule is "> 80"), so 40 is the highest safe level.
        (80, 40, 1, 4, 1, None),
        (80, 40.1, 1, 4, 1, (2, 1, 80.2, 40.0)),
        # min 2: the smallest fleet that scales in has 3 VMs: 3 x 50 / 2 = 75 < 80.
        (80, 50, 2, 4, 1, None),
        (80, 55, 2, 4, 1, (3, 1, 82.5, 53.3)),
        # two VMs per scale-in: 4 VMs at 30 % -> 2 VMs at 60 % > 50 %; at 3 VMs only one goes (min 2).
        (50, 30, 2, 6, 2, (4, 2, 60.0, 25.0)),
        # The demo's: 70 / 20, min 2.
        (70, 20, 2, 4, 1, None),
        # No scale-in possible at all (min = max): nothing to check.
        (80, 79, 3, 3, 1, None),
    ],
)
def test_threshold_flap(high, low, min_, max_, step, flap):
    found = flapping.threshold_flap(
        scale_out_threshold=high,
        scale_in_threshold=low,
        min_instances=min_,
        max_instances=max_,
        scale_in_step=step,
    )
    if flap is None:
        assert found is None
    else:
        assert (found.n, found.removed, round(found.after, 1), found.safe) == flap
        # The threshold it proposes passes.
        assert (
            flapping.threshold_flap(
                scale_out_threshold=high,
                scale_in_threshold=found.safe,
                min_instances=min_,
                max_instances=max_,
                scale_in_step=step,
            )
            is None
        )


# --- the hold at run time ---------------------------------------------------------------------------------------
def test_out_in_out_within_an_hour_holds_scale_in_for_an_hour_from_the_last_scale_out():
    recent = minutes_ago((50, OUT), (30, IN), (10, OUT))
    decision = scale_in(recent)
    assert decision.outcome == policy.FLAP_HOLD == "flap_hold"
    assert not decision.acts and decision.count == 0
    assert decision.params == {"reversals": 2, "ago": 600.0, "until": "2026-12-01 12:50:00 UTC"}
    assert shown(decision) == (
        "Scale-in held against flapping: 2 reversals (out, in, out) within an hour, the last scale-out 600 s ago; "
        "no scale-in until 2026-12-01 12:50:00 UTC."
    )
    # An hour after that last scale-out, scale-in goes again.
    later = decide(
        policy=SCALE_IN,
        fleet=Fleet(4, 0),
        signal=Signal.idle(),
        last_action_at=None,
        active_event_id=None,
        now=NOW + timedelta(minutes=50),
        recent_actions=recent,
    )
    assert later.outcome == policy.SCALE_IN


@pytest.mark.parametrize(
    "pairs, outcome",
    [
        ((), policy.SCALE_IN),
        (((30, OUT), (20, IN)), policy.SCALE_IN),  # one reversal
        (((50, OUT), (40, OUT), (30, IN), (25, IN)), policy.SCALE_IN),  # still one
        (((70, OUT), (30, IN), (5, OUT)), policy.SCALE_IN),  # out .. out 65 min apart: not within an hour
        (((60, OUT), (30, IN), (0.5, OUT)), policy.FLAP_HOLD),  # 59.5 min apart
        (((100, OUT), (90, IN), (80, OUT)), policy.SCALE_IN),  # flapped 80 min ago: the hold ended 20 min ago
        (((119, OUT), (118, IN), (117, OUT)), policy.SCALE_IN),  # the hour's hold is over
        (((40, IN), (30, OUT), (20, IN)), policy.SCALE_IN),  # in, out, in: the next scale-in is no new reversal
        (((40, OUT), (30, IN), (20, OUT), (10, IN), (5, OUT)), policy.FLAP_HOLD),
        (((20, "sideways"), (10, OUT)), policy.SCALE_IN),  # an unknown direction is no action
    ],
)
def test_what_holds_scale_in(pairs, outcome):
    assert scale_in(minutes_ago(*pairs)).outcome == outcome


def test_the_hold_is_after_min_the_scale_out_in_progress_warm_up_and_the_cooldown_and_holds_target_tracking():
    recent = minutes_ago((50, OUT), (30, IN), (10, OUT))
    assert scale_in(recent, fleet=Fleet(1, 0)).outcome == policy.AT_MIN
    assert scale_in(recent, fleet=Fleet(3, 1)).outcome == policy.ALREADY_SCALING
    warm = Fleet(4, 0, newest_in_service_at=NOW - timedelta(seconds=10))
    assert scale_in(recent, fleet=warm).outcome == policy.WARMING_UP
    tracking = Policy(
        service_name="web", type=policy.TARGET_TRACKING, min_instances=1, max_instances=6, target_value=60
    )
    assert scale_in((), pol=tracking, signal=Signal.metric(10, idle_value=10)).outcome == policy.SCALE_IN
    assert scale_in(recent, pol=tracking, signal=Signal.metric(10, idle_value=10)).outcome == policy.FLAP_HOLD


def test_scale_out_and_an_operators_removal_are_never_held():
    recent = minutes_ago((50, OUT), (30, IN), (10, OUT))
    assert scale_in(recent, signal=Signal.alert()).outcome == policy.SCALE_OUT
    assert scale_in(recent, signal=Signal.remove()).outcome == policy.SCALE_IN


def test_decide_without_recent_actions_is_as_before():
    """The argument defaults to none: a caller that does not pass it decides as it did."""
    without = decide(
        policy=SCALE_IN, fleet=Fleet(4, 0), signal=Signal.idle(), last_action_at=None, active_event_id=None, now=NOW
    )
    assert without == scale_in(())


# --- dry-run ------------------------------------------------------------------------------------------------------
def test_would_keeps_the_decision_and_says_what_would_have_been_done():
    live = decide(
        policy=Policy(service_name="web", max_instances=4, step=2),
        fleet=Fleet(1, 0),
        signal=Signal.alert(),
        last_action_at=None,
        active_event_id=None,
        now=NOW,
    )
    dry = policy.would(live)
    assert (dry.outcome, dry.count, dry.source, dry.acts, dry.dry_run) == ("scale_out", 2, "alert", True, True)
    assert not live.dry_run
    assert shown(dry) == (
        "Dry run, nothing triggered: would scale out by 2 VM(s). Scale out by 2 VM(s): 1 instances running, maximum 4."
    )
    assert shown(policy.would(scale_in(()))).startswith("Dry run, nothing triggered: would scale in by 1 VM(s). ")
    # A decision that does not act keeps its message, marked dry-run.
    held = policy.would(scale_in(minutes_ago((50, OUT), (30, IN), (10, OUT))))
    assert held.dry_run and held.outcome == policy.FLAP_HOLD and held.message.startswith("Scale-in held")
