"""Replay: what a policy would have done over a recorded metric. Pure: the series and the policy in, the would-be
events, the fleet over time and the totals out. No ORM, no settings, no clock, no network (the loader is
autoscaling/replay_service.py).

Every step of the series asks autoscaling.policy.decide (the one decision the webhook, the evaluator and dry-run
use), with the inputs `decide_inputs` builds from the replayed fleet, exactly as the live paths build them from the
inventory and the events. What the live loop has and a replay must model:

- The alert. Prometheus fires the scale-out rule when the expression stayed above the threshold for the rule's
  `for:` (pending at the first evaluation above, firing once `for` has passed since); the scale-in rule likewise
  below the scale-in threshold for the scale-in duration. A step without a value (a gap) ends both, as a missing
  sample resets a pending alert. Target tracking reads the average and the highest average over the scale-in
  duration, as the evaluator does.
- The load. The recorded value is the average over the VMs that were serving then (`recorded_counts`); the same
  total load spreads over the replayed VMs that serve: value x recorded count / replayed count.
- The fleet. A scale-out's VMs are "being created" (and the event in progress) for `provisioning_seconds` (the
  service's measured median), then in service; a scale-in's VMs leave the decision's count at once, as the
  inventory marks them leaving, but keep serving load until their drain (`drain_seconds`) is over.
- What the replay ignores: Alertmanager's grouping delay and the evaluator's 15 s tick (at a 1-minute resolution
  both are within a step), failed pipelines, protected instances beyond the `protected` count.
"""

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from autoscaling import flapping
from autoscaling import policy as decision_policy

OUT = "out"
IN = "in"


@dataclass(frozen=True)
class Rule:
    """The alert rules a step policy is decided from (the target tracking reads the average itself)."""

    threshold: float
    duration_seconds: int
    scale_in_threshold: float | None = None
    scale_in_duration_seconds: int = 600


@dataclass(frozen=True)
class WouldBeEvent:
    at: float  # unix seconds
    direction: str  # OUT or IN
    count: int
    source: str
    message: str  # a message id and its parameters, as decide returns them: the caller translates
    params: dict
    fleet_before: int  # in service + being created when it was decided


@dataclass
class ReplayResult:
    step: float
    events: list = field(default_factory=list)  # [WouldBeEvent]
    fleet: list = field(default_factory=list)  # [(ts, VMs in service)] at every step
    recorded_fleet: list = field(default_factory=list)  # [(ts, VMs the recorded average was measured over)]
    load: list = field(default_factory=list)  # [(ts, the replayed per-VM average)]
    minutes_above: float = 0.0  # the replayed average above the scale-out threshold (or target)
    recorded_minutes_above: float = 0.0
    vm_hours: float = 0.0  # every VM that exists: in service, being created, draining
    recorded_vm_hours: float = 0.0
    decisions: int = 0  # decide() calls

    @property
    def scale_outs(self):
        return sum(1 for event in self.events if event.direction == OUT)

    @property
    def scale_ins(self):
        return sum(1 for event in self.events if event.direction == IN)

    @property
    def actions(self):
        """The replay's own record of its actions, (unix ts, direction), oldest first."""
        return tuple((event.at, event.direction) for event in self.events)


@dataclass
class _Fleet:
    """The replayed fleet: what decide reads (in service, being created, warm-up, the last actions) and what the
    load spreads over (in service plus draining)."""

    in_service: int
    creating: list = field(default_factory=list)  # [(ready at, count, event number)]
    draining: list = field(default_factory=list)  # [(gone at, count)]
    # As decide reads them (datetimes, converted once when they change).
    newest_in_service_at: datetime | None = None
    last_scale_out_at: datetime | None = None
    last_scale_in_at: datetime | None = None
    actions: list = field(default_factory=list)  # [(ts, direction)]

    def advance(self, ts):
        if self.draining and self.draining[0][0] <= ts:
            self.draining = [item for item in self.draining if item[0] > ts]
        if not self.creating or self.creating[0][0] > ts:
            return
        ready = [item for item in self.creating if item[0] <= ts]
        if ready:
            self.creating = [item for item in self.creating if item[0] > ts]
            self.in_service += sum(count for _at, count, _n in ready)
            self.newest_in_service_at = _when(max(at for at, _count, _n in ready))

    @property
    def creating_count(self):
        return sum(count for _at, count, _n in self.creating)

    @property
    def serving(self):
        return self.in_service + sum(count for _at, count in self.draining)

    @property
    def existing(self):
        return self.serving + self.creating_count


def _when(ts):
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def decide_inputs(*, policy, fleet, signal, now, protected=0):
    """The keyword arguments of autoscaling.policy.decide at `now` (a datetime) for the replayed fleet: the one
    place that maps the replay's state onto the decision's inputs (as events.intake.decision_fleet does for the
    inventory)."""
    return {
        "policy": policy,
        "fleet": decision_policy.Fleet(
            in_service=fleet.in_service,
            creating=fleet.creating_count,
            known=True,
            removable=max(fleet.in_service - protected, 0),
            newest_in_service_at=fleet.newest_in_service_at,
        ),
        "signal": signal,
        "last_action_at": fleet.last_scale_out_at,
        "active_event_id": fleet.creating[0][2] if fleet.creating else None,
        "now": now,
        "last_scale_in_at": fleet.last_scale_in_at,
        # The flap guard reads the replay's own would-be actions, as the live loop reads the service's events.
        "recent_actions": tuple(
            (datetime.fromtimestamp(ts, UTC), direction)
            for ts, direction in fleet.actions
            if ts >= now.timestamp() - flapping.LOOKBACK_SECONDS
        ),
    }


class _Alert:
    """One alert rule's state over the steps: pending since the first step of the condition, firing after `for`."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.since = None

    def observe(self, ts, condition):
        if not condition:
            self.since = None
            return False
        if self.since is None:
            self.since = ts
        return ts - self.since >= self.seconds


def _count_at(recorded_counts, times, ts):
    """The recorded count in force at `ts` (the latest at or before it; the first one before the series)."""
    i = bisect.bisect_right(times, ts) - 1
    return recorded_counts[max(i, 0)][1]


def replay(
    *,
    policy,
    rule,
    points,
    recorded_counts,
    step,
    provisioning_seconds,
    drain_seconds,
    initial_count=None,
    protected=0,
):
    """Replay `policy` (autoscaling.policy.Policy) over `points` [(unix ts, per-VM average)] taken every `step`
    seconds. `recorded_counts` [(unix ts, VMs)] says over how many VMs each value was measured (in time order; a
    count holds until the next one). The replayed fleet starts at `initial_count` (default: the first recorded
    count). `protected`: VMs never chosen for scale-in (the inventory's protected ones). Returns a ReplayResult."""
    points = sorted(points)
    recorded_counts = sorted(recorded_counts) or [(points[0][0] if points else 0.0, 1)]
    count_times = [ts for ts, _count in recorded_counts]
    result = ReplayResult(step=float(step))
    if not points:
        return result
    start_count = _count_at(recorded_counts, count_times, points[0][0]) if initial_count is None else initial_count
    fleet = _Fleet(in_service=int(start_count))
    recorded, next_count = recorded_counts[0][1], 0  # the count in force (the first one before the series)
    tracking = policy.type == decision_policy.TARGET_TRACKING
    threshold = float(policy.target_value) if tracking else float(rule.threshold)
    scale_out_alert = _Alert(rule.duration_seconds)
    scale_in_alert = _Alert(rule.scale_in_duration_seconds)
    peak_window = deque()  # target tracking: (ts, load) within the scale-in duration, for the highest average
    step_hours = step / 3600.0
    step_minutes = step / 60.0
    for ts, value in points:
        fleet.advance(ts)
        while next_count < len(recorded_counts) and recorded_counts[next_count][0] <= ts:
            recorded = recorded_counts[next_count][1]
            next_count += 1
        serving = fleet.serving
        have = value is not None and math.isfinite(value)
        load = value * recorded / serving if have and serving else (value if have else None)
        result.fleet.append((ts, fleet.in_service))
        result.recorded_fleet.append((ts, recorded))
        result.load.append((ts, load if load is not None else math.nan))
        result.vm_hours += fleet.existing * step_hours
        result.recorded_vm_hours += recorded * step_hours
        if have and value > threshold:
            result.recorded_minutes_above += step_minutes
        if load is not None and load > threshold:
            result.minutes_above += step_minutes
        signal = _signal(
            tracking=tracking,
            policy=policy,
            rule=rule,
            load=load,
            ts=ts,
            scale_out_alert=scale_out_alert,
            scale_in_alert=scale_in_alert,
            peak_window=peak_window,
        )
        decision = decision_policy.decide(
            **decide_inputs(policy=policy, fleet=fleet, signal=signal, now=_when(ts), protected=protected)
        )
        result.decisions += 1
        if decision.acts:
            _act(fleet, decision, ts, result, provisioning_seconds=provisioning_seconds, drain_seconds=drain_seconds)
    return result


def _signal(*, tracking, policy, rule, load, ts, scale_out_alert, scale_in_alert, peak_window):
    """The step's signal, as the evaluator reads it live: a firing scale-out alert wins over a scale-in one."""
    if tracking:
        if load is None:
            peak_window.clear()
            return decision_policy.Signal.metric(None)
        peak_window.append((ts, load))
        while peak_window and peak_window[0][0] < ts - policy.scale_in_duration_seconds:
            peak_window.popleft()
        return decision_policy.Signal.metric(load, max(v for _t, v in peak_window))
    out = scale_out_alert.observe(ts, load is not None and load > rule.threshold)
    idle = rule.scale_in_threshold is not None and scale_in_alert.observe(
        ts, load is not None and load < rule.scale_in_threshold
    )
    if out:
        return decision_policy.Signal.alert()
    if idle:
        return decision_policy.Signal.idle()
    return decision_policy.Signal.none()


def _act(fleet, decision, ts, result, *, provisioning_seconds, drain_seconds):
    before = fleet.in_service + fleet.creating_count
    number = len(result.events) + 1  # the would-be event's number: the "event #N in progress" of later reasons
    if decision.outcome == decision_policy.SCALE_IN:
        direction = IN
        fleet.in_service -= decision.count
        fleet.draining.append((ts + drain_seconds, decision.count))
        fleet.last_scale_in_at = _when(ts)
    else:
        direction = OUT
        fleet.creating.append((ts + provisioning_seconds, decision.count, number))
        fleet.last_scale_out_at = _when(ts)
    fleet.actions.append((ts, direction))
    result.events.append(
        WouldBeEvent(
            at=ts,
            direction=direction,
            count=decision.count,
            source=decision.source,
            message=decision.message,
            params=dict(decision.params),
            fleet_before=before,
        )
    )
