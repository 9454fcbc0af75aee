"""The scaling decision as a pure function: a table of inputs and the decision each must give."""

from datetime import UTC, datetime, timedelta

import pytest

from autoscaling import policy, safety
from autoscaling.policy import Fleet, Policy, Signal, decide

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
STEP = Policy(service_name="web", min_instances=1, max_instances=4, step=1, cooldown_seconds=300)
TRACKING = Policy(
    service_name="web",
    type=policy.TARGET_TRACKING,
    min_instances=2,
    max_instances=4,
    cooldown_seconds=300,
    target_value=60,
)


def reason(decision):
    return decision.message % decision.params


CASES = [
    # (name, policy, fleet, signal, last action seconds ago, active event, outcome, count, source, reason part)
    ("alert scales by the step", STEP, Fleet(2, 0), Signal.alert(), None, None, "scale_out", 1, "alert",
     "Scale out by 1 VM(s): 2 instances running, maximum 4."),
    ("manual count", STEP, Fleet(1, 0), Signal.manual(2), None, None, "scale_out", 2, "manual", "by 2 VM(s)"),
    ("manual default is the step", STEP, Fleet(1, 0), Signal.manual(None), None, None, "scale_out", 1, "manual", ""),
    ("capped by max", Policy(max_instances=3, step=5), Fleet(1, 0), Signal.alert(), None, None, "scale_out", 2,
     "alert", "by 2 VM(s)"),
    ("disabled first", Policy(enabled=False, service_name="web"), Fleet(0, 0), Signal.alert(), 1, 7, "disabled", 0,
     "", "Autoscaling of “web” is disabled."),
    ("cooldown", STEP, Fleet(2, 0), Signal.alert(), 100, None, "cooldown", 0, "",
     "began 100 s ago and the cooldown is 300 s (until 2026-12-01 12:03:20 UTC)"),
    ("cooldown just over", STEP, Fleet(2, 0), Signal.alert(), 300, None, "scale_out", 1, "alert", ""),
    ("at max counts being created", STEP, Fleet(2, 2), Signal.alert(), None, None, "at_max", 0, "",
     "2 instances running and 2 being created; the maximum is 4"),
    ("already scaling", STEP, Fleet(2, 0), Signal.alert(), None, 12, "already_scaling", 0, "", "event #12"),
    ("no alert", STEP, Fleet(2, 0), Signal.none(), None, None, "not_firing", 0, "", "No autoscale alert"),
    ("no alert, quiet in cooldown", STEP, Fleet(2, 0), Signal.none(), 10, None, "not_firing", 0, "", ""),
    ("below min after losses: replace", Policy(min_instances=3, max_instances=5), Fleet(1, 0), Signal.none(), None,
     None, "replace", 2, "replace", "minimum 3: replace 2 VM(s)"),
    ("a service the inventory does not know is not replaced", Policy(min_instances=3), Fleet(0, 0, known=False),
     Signal.none(), None, None, "not_firing", 0, "", ""),
    ("an alert of a service the inventory does not know adds the step", Policy(min_instances=3, step=1),
     Fleet(0, 0, known=False), Signal.alert(), None, None, "scale_out", 1, "alert", ""),
    ("replace counts being created", Policy(min_instances=3, max_instances=5), Fleet(1, 1), Signal.none(), None,
     None, "replace", 1, "replace", "1 being created"),
    ("replace waits for the cooldown", Policy(min_instances=3, cooldown_seconds=60), Fleet(1, 0), Signal.none(), 5,
     None, "cooldown", 0, "", ""),
    ("replace waits for an event in progress", Policy(min_instances=3), Fleet(1, 0), Signal.none(), None, 4,
     "already_scaling", 0, "", ""),
    ("an alert below min brings it to min", Policy(min_instances=3, max_instances=5, step=1), Fleet(1, 0),
     Signal.alert(), None, None, "scale_out", 2, "alert", ""),
    ("target tracking: the issue's example", TRACKING, Fleet(2, 0), Signal.metric(150), None, None, "scale_out", 2,
     "metric", "2 VMs at 150 % against a target of 60 %: desired ceil(2 x 150 / 60) = 5, max 4: +2"),
    ("target tracking: under max", TRACKING.__class__(**{**TRACKING.__dict__, "max_instances": 10}), Fleet(2, 0),
     Signal.metric(150), None, None, "scale_out", 3, "metric",
     "2 VMs at 150 % against a target of 60 %: desired ceil(2 x 150 / 60) = 5: +3"),
    ("target tracking: max step", TRACKING.__class__(**{**TRACKING.__dict__, "max_instances": 10, "max_step": 2}),
     Fleet(2, 0), Signal.metric(150), None, None, "scale_out", 2, "metric", "= 5, max step 2: +2"),
    ("target tracking: max and max step", TRACKING.__class__(**{**TRACKING.__dict__, "max_step": 1}), Fleet(2, 0),
     Signal.metric(150), None, None, "scale_out", 1, "metric", "= 5, max 4, max step 1: +1"),
    ("target tracking: on target", TRACKING, Fleet(2, 0), Signal.metric(40), None, None, "on_target", 0, "",
     "2 VMs at 40 % against a target of 60 %: desired ceil(2 x 40 / 60) = 2: no VM to add."),
    ("target tracking: exactly on target adds none", TRACKING, Fleet(2, 0), Signal.metric(60), None, None,
     "on_target", 0, "", "= 2: no VM to add"),
    ("target tracking: float products do not add a VM", TRACKING.__class__(**{**TRACKING.__dict__,
     "target_value": 0.35, "min_instances": 0}), Fleet(2, 0), Signal.metric(0.7 * 0.35 / 0.35 * 0.5), None, None,
     "on_target", 0, "", ""),
    ("target tracking: cooldown", TRACKING, Fleet(2, 0), Signal.metric(150), 30, None, "cooldown", 0, "", ""),
    ("target tracking: VMs being created are counted", TRACKING, Fleet(2, 1), Signal.metric(150), None, None,
     "scale_out", 1, "metric", ": +1"),
    ("target tracking: VMs being created cover the desired", TRACKING, Fleet(2, 2), Signal.metric(100), None,
     None, "on_target", 0, "", "desired ceil(2 x 100 / 60) = 4: no VM to add"),
    ("target tracking: wanted but at max", TRACKING, Fleet(2, 2), Signal.metric(150), None, None, "at_max", 0, "",
     "2 instances running and 2 being created; the maximum is 4"),
    ("target tracking: no metric", TRACKING, Fleet(2, 0), Signal.metric(None), None, None, "no_metric", 0, "", ""),
    ("target tracking: no metric below min replaces", TRACKING, Fleet(1, 0), Signal.metric(None), None, None,
     "replace", 1, "replace", ""),
    ("target tracking ignores alerts", TRACKING, Fleet(2, 0), Signal.alert(), None, None, "not_a_signal", 0, "",
     "tracks a target"),
    ("target tracking: manual still works", TRACKING, Fleet(2, 0), Signal.manual(1), None, None, "scale_out", 1,
     "manual", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "pol", "fleet", "signal", "ago", "active", "outcome", "count", "source", "why"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_decide(name, pol, fleet, signal, ago, active, outcome, count, source, why):
    last = NOW - timedelta(seconds=ago) if ago is not None else None
    decision = decide(policy=pol, fleet=fleet, signal=signal, last_action_at=last, active_event_id=active, now=NOW)
    assert (decision.outcome, decision.count, decision.source) == (outcome, count, source)
    assert decision.acts == (outcome in ("scale_out", "replace"))
    assert why in reason(decision)


def test_the_function_is_pure():
    """Same inputs, same decision; nothing in it reads the database, the settings or the clock."""
    import ast
    from pathlib import Path

    from autoscaling import flapping

    def imported(module):
        tree = ast.parse(Path(module.__file__).read_text())
        return {
            (f"{node.module}.{alias.name}" if node.module == "autoscaling" else node.module)
            if isinstance(node, ast.ImportFrom)
            else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }

    # The flap guard's and the safety nets' modules are the only ones of the project's it reads, as pure.
    assert imported(policy) <= {"math", "dataclasses", "datetime", "autoscaling.flapping", "autoscaling.safety"}
    assert imported(flapping) <= {"math", "dataclasses", "datetime"}
    assert imported(safety) <= {"dataclasses", "datetime"}
    inputs = {"policy": TRACKING, "fleet": Fleet(2, 0), "signal": Signal.metric(150), "last_action_at": None}
    first = decide(**inputs, active_event_id=None, now=NOW)
    assert first == decide(**inputs, active_event_id=None, now=NOW + timedelta(days=1))


# --- scale-in -------------------------------------------------------------------------------------------------
SCALE_IN = Policy(
    service_name="web", min_instances=2, max_instances=6, cooldown_seconds=60, scale_in_cooldown_seconds=300
)
TRACKING_IN = Policy(
    service_name="web",
    type=policy.TARGET_TRACKING,
    min_instances=2,
    max_instances=6,
    cooldown_seconds=60,
    target_value=60,
    scale_in_cooldown_seconds=0,
    scale_in_duration_seconds=300,
)
WARM = NOW - timedelta(seconds=30)  # came into service 30 s ago: within the scale-out cooldown of 60 s
COLD = NOW - timedelta(seconds=600)

IN_CASES = [
    # (name, policy, fleet, signal, last scale-in seconds ago, active scale-out, outcome, count, source, reason part)
    ("an idle alert removes the step", SCALE_IN, Fleet(4, 0, newest_in_service_at=COLD), Signal.idle(), None, None,
     "scale_in", 1, "alert", "Scale in by 1 VM(s): 4 instances in service, minimum 2."),
    ("the step is capped by min", Policy(min_instances=2, scale_in_step=5), Fleet(3, 0), Signal.idle(), None, None,
     "scale_in", 1, "alert", ""),
    ("the step is capped by what may go", Policy(min_instances=1, scale_in_step=3), Fleet(5, 0, removable=2),
     Signal.idle(), None, None, "scale_in", 2, "alert", ""),
    ("never below min", SCALE_IN, Fleet(2, 0), Signal.idle(), None, None, "at_min", 0, "",
     "the minimum is 2, so no VM is removed"),
    ("below min an idle alert still replaces", SCALE_IN, Fleet(1, 0), Signal.idle(), None, None, "replace", 1,
     "replace", ""),
    ("not while a scale-out is in flight", SCALE_IN, Fleet(4, 0), Signal.idle(), None, 9, "already_scaling", 0, "",
     "event #9 is still in progress; no scale-in"),
    ("not while VMs are being created", SCALE_IN, Fleet(3, 1), Signal.idle(), None, None, "already_scaling", 0, "",
     "1 VM(s) still being created"),
    ("not while the new VMs warm up", SCALE_IN, Fleet(4, 0, newest_in_service_at=WARM), Signal.idle(), None, None,
     "warming_up", 0, "", "came into service 30 s ago"),
    ("warm-up ends with the scale-out cooldown", SCALE_IN,
     Fleet(4, 0, newest_in_service_at=NOW - timedelta(seconds=60)), Signal.idle(), None, None, "scale_in", 1,
     "alert", ""),
    ("the scale-in cooldown", SCALE_IN, Fleet(4, 0), Signal.idle(), 100, None, "cooldown", 0, "",
     "the last scale-in began 100 s ago and the scale-in cooldown is 300 s"),
    ("the scale-in cooldown over", SCALE_IN, Fleet(4, 0), Signal.idle(), 300, None, "scale_in", 1, "alert", ""),
    ("every instance protected", SCALE_IN, Fleet(4, 0, removable=0), Signal.idle(), None, None, "no_candidate", 0,
     "", "all 4 instances in service are protected"),
    ("no scale-in threshold", Policy(scale_in_enabled=False, service_name="web"), Fleet(4, 0), Signal.idle(), None,
     None, "not_a_signal", 0, "", "no scale-in threshold"),
    ("target tracking ignores idle alerts", TRACKING_IN, Fleet(4, 0), Signal.idle(), None, None, "not_a_signal", 0,
     "", "tracks a target"),
    ("disabled first", Policy(enabled=False), Fleet(4, 0), Signal.idle(), None, None, "disabled", 0, "", ""),
    ("an operator's removal skips cooldown and warm-up", SCALE_IN, Fleet(4, 0, newest_in_service_at=WARM),
     Signal.remove(), 10, 3, "scale_in", 1, "manual", "at an operator's request"),
    ("an operator's removal never crosses min", SCALE_IN, Fleet(2, 0), Signal.remove(), None, None, "at_min", 0, "",
     ""),
    ("target tracking: 4 at 20 % of 60 %", TRACKING_IN, Fleet(4, 0), Signal.metric(20, idle_value=20), None, None,
     "scale_in", 1, "metric",
     "4 VMs at most 20 % over the last 300 s: 3 VMs would be at 26.7 %, at or below 0.9 x 60 % = 54 %: -1"),
    ("target tracking: the step lets more go at once", TRACKING_IN.__class__(**{**TRACKING_IN.__dict__,
     "scale_in_step": 3}), Fleet(4, 0), Signal.metric(20, idle_value=20), None, None, "scale_in", 2, "metric",
     "2 VMs would be at 40 %"),
    ("target tracking: N - 1 would be too busy", TRACKING_IN, Fleet(3, 0), Signal.metric(40, idle_value=40), None,
     None, "not_idle", 0, "", "2 VMs would be at 60 %, above 0.9 x 60 % = 54 %: no VM to remove."),
    ("target tracking: the peak of the window counts, not the current value", TRACKING_IN, Fleet(4, 0),
     Signal.metric(10, idle_value=45), None, None, "not_idle", 0, "", "at most 45 %"),
    ("target tracking: exactly 0.9 x target scales in", TRACKING_IN, Fleet(3, 0), Signal.metric(36, idle_value=36),
     None, None, "scale_in", 1, "metric", "2 VMs would be at 54 %"),
    ("target tracking at min is on target", TRACKING_IN, Fleet(2, 0), Signal.metric(5, idle_value=5), None, None,
     "on_target", 0, "", ""),
    ("target tracking without a window value is on target", TRACKING_IN, Fleet(4, 0), Signal.metric(5), None, None,
     "on_target", 0, "", ""),
    ("target tracking: scale-out wins", TRACKING_IN, Fleet(2, 0), Signal.metric(90, idle_value=10), None, None,
     "scale_out", 1, "metric", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "pol", "fleet", "signal", "ago", "active", "outcome", "count", "source", "why"),
    IN_CASES,
    ids=[case[0] for case in IN_CASES],
)
def test_decide_scale_in(name, pol, fleet, signal, ago, active, outcome, count, source, why):
    last_in = NOW - timedelta(seconds=ago) if ago is not None else None
    decision = decide(
        policy=pol,
        fleet=fleet,
        signal=signal,
        last_action_at=None,
        active_event_id=active,
        now=NOW,
        last_scale_in_at=last_in,
    )
    assert (decision.outcome, decision.count, decision.source) == (outcome, count, source), reason(decision)
    assert why in reason(decision)


def test_the_scale_out_cooldown_does_not_hold_a_scale_in_back_beyond_warm_up():
    """A scale-out 100 s ago (cooldown 300 s) whose VM came into service long ago: scale-in may go."""
    pol = Policy(min_instances=1, cooldown_seconds=300, scale_in_cooldown_seconds=300)
    decision = decide(
        policy=pol,
        fleet=Fleet(3, 0, newest_in_service_at=NOW - timedelta(seconds=400)),
        signal=Signal.idle(),
        last_action_at=NOW - timedelta(seconds=100),
        active_event_id=None,
        now=NOW,
        last_scale_in_at=None,
    )
    assert decision.outcome == "scale_in"


def test_a_scale_in_does_not_hold_a_scale_out_back():
    decision = decide(
        policy=STEP,
        fleet=Fleet(2, 0),
        signal=Signal.alert(),
        last_action_at=None,
        active_event_id=None,
        now=NOW,
        last_scale_in_at=NOW - timedelta(seconds=5),
    )
    assert decision.outcome == "scale_out"


def test_target_tracking_steps_down_to_min_without_overshooting_back_out():
    """4 VMs at 20 % against a target of 60 % (the load of 0.8 VM): one VM per scale-in cooldown down to min 2,
    and at every size the same metric never asks for a scale-out again."""
    load = 80.0  # percent of one VM, spread over the VMs in service
    n, sizes = 4, [4]
    for _round in range(10):
        average = load / n
        decision = decide(
            policy=TRACKING_IN,
            fleet=Fleet(n, 0),
            signal=Signal.metric(average, idle_value=average),
            last_action_at=None,
            active_event_id=None,
            now=NOW,
        )
        assert decision.outcome != "scale_out"
        if decision.outcome != "scale_in":
            break
        n -= decision.count
        sizes.append(n)
    assert sizes == [4, 3, 2]
    assert decision.outcome == "on_target"


def test_the_min_is_never_crossed_whatever_the_step_and_signal():
    for in_service in range(0, 6):
        for step in range(1, 6):
            for signal in (Signal.idle(), Signal.remove(), Signal.metric(1, idle_value=1)):
                pol = Policy(type=policy.TARGET_TRACKING if signal.kind == "metric" else policy.STEP,
                             min_instances=2, max_instances=6, target_value=60, scale_in_step=step)  # fmt: skip
                decision = decide(
                    policy=pol,
                    fleet=Fleet(in_service, 0),
                    signal=signal,
                    last_action_at=None,
                    active_event_id=None,
                    now=NOW,
                )
                if decision.outcome == "scale_in":
                    assert in_service - decision.count >= 2, (in_service, step, signal)


def candidate(pk, minutes_ago, **fields):
    return policy.Candidate(id=pk, in_service_at=NOW - timedelta(minutes=minutes_ago), **fields)


def test_which_vm_goes_unhealthy_then_old_template_then_newest():
    fleet = [
        candidate(1, 50, template_id=7),
        candidate(2, 40, template_id=7),
        candidate(3, 30, template_id=6),  # an older template
        candidate(4, 20, template_id=7, healthy=False),
        candidate(5, 10, template_id=7),
        candidate(6, 5, template_id=7, protected=True),
        candidate(7, 1, template_id=7, chosen=True),  # already leaving
    ]
    assert policy.instances_to_remove(fleet, count=6, template_id=7) == [4, 3, 5, 2, 1]
    assert policy.instances_to_remove(fleet, count=1, template_id=7) == [4]
    assert policy.instances_to_remove(fleet, count=6, order=policy.OLDEST, template_id=7) == [4, 3, 1, 2, 5]
    healthy_same = [c for c in fleet if c.id in (1, 2, 5, 6)]
    assert policy.instances_to_remove(healthy_same, count=1, template_id=7) == [5]
    assert policy.instances_to_remove(healthy_same, count=1, order=policy.OLDEST, template_id=7) == [1]


def test_protected_and_chosen_instances_are_never_chosen():
    fleet = [
        candidate(1, 9, protected=True),
        candidate(2, 8, protected=True, healthy=False),
        candidate(3, 1, chosen=True),
    ]
    assert policy.instances_to_remove(fleet, count=3) == []
