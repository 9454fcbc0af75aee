"""The safety nets of the pure decision: the circuit breaker, suspended processes, and max counting every VM that
may exist (autoscaling/safety.py, autoscaling/policy.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from autoscaling import policy, safety
from autoscaling.policy import Fleet, Policy, Signal, decide

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STEP = Policy(service_name="web", min_instances=2, max_instances=10, step=2, cooldown_seconds=0)


def decided(signal=None, *, fleet=None, safety_nets=None, pol=STEP, now=NOW, active=None):
    return decide(
        policy=pol,
        fleet=fleet or Fleet(in_service=2),
        signal=signal or Signal.alert(),
        last_action_at=None,
        active_event_id=active,
        now=now,
        safety=safety_nets,
    )


def breaker(failures, minutes_ago=1):
    return safety.Safety(
        breaker=safety.Breaker(failures=failures, last_failure_at=NOW - timedelta(minutes=minutes_ago))
    )


def suspended(*processes):
    return safety.Safety(
        suspended={p: safety.Suspended(reason="maintenance", by="alice", since=NOW) for p in processes}
    )


# --- the circuit breaker ---------------------------------------------------------------------------------------
def test_the_breaker_opens_after_3_consecutive_failures_and_then_triggers_nothing():
    assert decided(safety_nets=breaker(2)).outcome == policy.SCALE_OUT
    for signal in (Signal.alert(), Signal.manual(1), Signal.none()):
        fleet = Fleet(in_service=0) if signal.kind == "none" else None  # below min: a replace
        decision = decided(signal, fleet=fleet, safety_nets=breaker(3))
        assert decision.outcome == policy.BREAKER_OPEN and not decision.acts and decision.count == 0
        assert decision.params["failures"] == 3 and decision.params["backoff"] == 5
        assert decision.params["retry"] == "2026-01-01 12:04:00 UTC"


def test_the_breaker_retries_with_a_single_trial_after_5_10_20_then_30_minutes():
    # failures: 3 opened it (wait 5 min); each failed trial adds one and the next wait grows.
    for failures, minutes in ((3, 5), (4, 10), (5, 20), (6, 30), (9, 30)):
        assert decided(safety_nets=breaker(failures, minutes - 0.5)).outcome == policy.BREAKER_OPEN, failures
        trial = decided(safety_nets=breaker(failures, minutes))
        assert trial.outcome == policy.SCALE_OUT and trial.acts and trial.count == 1, (failures, trial)
        assert trial.message == safety.TRIAL_MESSAGE


def test_a_trial_in_progress_holds_every_other_scale_out():
    assert decided(safety_nets=breaker(3, 6), active=41).outcome == policy.ALREADY_SCALING


def test_the_breaker_closes_when_the_failures_start_again_from_0():
    assert decided(safety_nets=breaker(0)).outcome == policy.SCALE_OUT
    assert decided(safety_nets=breaker(0)).count == 2


def test_an_open_breaker_does_not_hold_a_scale_in():
    pol = Policy(service_name="web", min_instances=1, max_instances=10, cooldown_seconds=0, scale_in_cooldown_seconds=0)
    decision = decided(Signal.idle(), fleet=Fleet(in_service=3), safety_nets=breaker(5), pol=pol)
    assert decision.outcome == policy.SCALE_IN


def test_a_threshold_of_0_never_opens():
    nets = safety.Safety(breaker=safety.Breaker(failures=50, last_failure_at=NOW, threshold=0))
    assert decided(safety_nets=nets).outcome == policy.SCALE_OUT


# --- suspended processes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("process", "signal", "fleet", "wanted"),
    [
        (safety.SCALE_OUT, Signal.alert(), Fleet(in_service=2), 2),
        (safety.SCALE_OUT, Signal.manual(3), Fleet(in_service=2), 3),
        (safety.REPLACE, Signal.none(), Fleet(in_service=1), 1),
        (safety.SCALE_IN, Signal.idle(), Fleet(in_service=4), 1),
        (safety.SCALE_IN, Signal.remove(), Fleet(in_service=4), 1),
    ],
)
def test_a_suspended_process_is_recorded_as_suspended_with_what_it_would_have_done(process, signal, fleet, wanted):
    pol = Policy(service_name="web", min_instances=2, max_instances=10, step=2, cooldown_seconds=0,
                 scale_in_cooldown_seconds=0)  # fmt: skip
    assert decided(signal, fleet=fleet, pol=pol).acts  # acts when nothing is suspended
    decision = decided(signal, fleet=fleet, pol=pol, safety_nets=suspended(process))
    assert decision.outcome == policy.SUSPENDED and not decision.acts
    assert decision.params == {
        "service": "web",
        "by": "alice",
        "since": "2026-01-01 12:00:00 UTC",
        "reason": "maintenance",
        "count": wanted,
    }
    others = [p for p in safety.PROCESSES if p not in (process, safety.INTAKE)]
    assert decided(signal, fleet=fleet, pol=pol, safety_nets=suspended(*others)).acts


def test_suspended_intake_stores_the_alert_without_acting_but_keeps_the_minimum():
    decision = decided(Signal.alert(), safety_nets=suspended(safety.INTAKE))
    assert decision.outcome == policy.SUSPENDED and "Alert intake" in decision.message
    assert decided(Signal.idle(), fleet=Fleet(in_service=5), safety_nets=suspended(safety.INTAKE)).outcome == (
        policy.SUSPENDED
    )
    below_min = decided(Signal.alert(), fleet=Fleet(in_service=1), safety_nets=suspended(safety.INTAKE))
    assert below_min.outcome == policy.REPLACE and below_min.count == 1
    # The metric of target tracking is not alert intake.
    tracking = Policy(type=policy.TARGET_TRACKING, target_value=50, service_name="web", max_instances=10,
                      cooldown_seconds=0)  # fmt: skip
    assert decided(Signal.metric(100), pol=tracking, safety_nets=suspended(safety.INTAKE)).acts


def test_a_disabled_config_says_disabled_whatever_is_suspended():
    pol = Policy(service_name="web", enabled=False)
    assert decided(safety_nets=suspended(*safety.PROCESSES), pol=pol).outcome == policy.DISABLED


# --- max counts every VM that may exist ----------------------------------------------------------------------
def test_failed_draining_and_removing_vms_count_toward_max_not_min():
    pol = Policy(service_name="web", min_instances=2, max_instances=4, step=3, cooldown_seconds=0)
    # 2 in service and 2 failed clones still there: at max, nothing more is created.
    decision = decided(fleet=Fleet(in_service=2, held=2), pol=pol)
    assert decision.outcome == policy.AT_MAX and decision.params["held"] == 2
    # One failed: room for one only.
    assert decided(fleet=Fleet(in_service=2, held=1), pol=pol).count == 1
    # Held VMs serve nothing: below min they are replaced, within max.
    replace = decided(Signal.none(), fleet=Fleet(in_service=1, held=2), pol=pol)
    assert replace.outcome == policy.REPLACE and replace.count == 1
    assert decided(Signal.none(), fleet=Fleet(in_service=0, held=4), pol=pol).outcome == policy.AT_MAX


def test_whatever_fails_the_vms_that_may_exist_never_exceed_max():
    """A run of decisions where every scale-out leaves its VMs behind, failed: they are never more than max."""
    pol = Policy(service_name="web", min_instances=2, max_instances=5, step=2, cooldown_seconds=0)
    in_service, held = 2, 0
    for _ in range(20):
        decision = decided(fleet=Fleet(in_service=in_service, held=held), pol=pol)
        if decision.acts:
            held += decision.count  # the clones fail and stay
        assert in_service + held <= pol.max_instances
    assert in_service + held == pol.max_instances
