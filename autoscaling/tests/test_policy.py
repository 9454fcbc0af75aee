"""The scaling decision as a pure function: a table of inputs and the decision each must give."""

from datetime import UTC, datetime, timedelta

import pytest

from autoscaling import policy
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

    tree = ast.parse(Path(policy.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"math", "dataclasses", "datetime"}
    inputs = {"policy": TRACKING, "fleet": Fleet(2, 0), "signal": Signal.metric(150), "last_action_at": None}
    first = decide(**inputs, active_event_id=None, now=NOW)
    assert first == decide(**inputs, active_event_id=None, now=NOW + timedelta(days=1))
