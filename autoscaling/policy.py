"""The scaling decision as one pure function: the policy, the fleet's counts, the signal and the times of the last
actions in; the decision (outcome, how many VMs, and why) out.

No ORM, no settings, no clock: the webhook, the manual request and the evaluator (events/intake.py,
events/evaluator.py) load these inputs under the service's row lock and call `decide`, so they always agree; a
dry-run or a replay can call it with any inputs. The reason comes back as a message id and its parameters: the
caller translates it (`gettext(decision.message) % decision.params`), in the language of whoever reads it.

The checks, in order:
1. disabled; a target-tracking policy is not decided from alerts;
2. the signal: no firing alert, or a metric at or below the target, needs nothing (unless below min);
3. the cooldown since the last action began; the maximum (in service plus being created); an action in progress;
4. the count: the step (or the manual request's count), or target tracking's desired - N, and at least what
   brings the fleet back to min; always capped by max. Below min with no signal: a "replace" of the missing VMs
   (only for a service the inventory knows: one whose VMs were never adopted has nothing known to replace).

Target tracking: desired = ceil(N x current / target), with N the VMs in service (the ones the average is
measured over); the increase is min(desired, max) - (in service + being created), capped by the maximum step.

Scale-in (`decide` too, so every path agrees): the signal is a firing scale-in alert (step policy: the metric
below the scale-in threshold for the scale-in duration), target tracking's rule (N - k VMs would still keep the
highest average of the scale-in duration at or below 0.9 x target, the conservative rule AWS uses), or an operator's
removal of one instance. Checks, in order: at min (never below it); a scale-out in progress (its event, or VMs being
created); warm-up (a VM the portal created came into service less than the scale-out cooldown ago); the scale-in
cooldown since the last scale-in began (its own: a scale-out is never held back by a scale-in, nor the other way
round beyond warm-up); the flap guard (out, in, out within an hour holds scale-in for an hour:
autoscaling/flapping.py, from `recent_actions`); an instance that may go (not protected, not already chosen). The
count: the scale-in step, never below min. Which instances go is `instances_to_remove`, pure too. An operator's
removal checks only min.

Dry-run: a dry-run config is decided by this same function on the same inputs; `would` then marks the decision and
says what would have been done. Its callers feed it the would-be actions as the last actions (cooldown, flap guard).
"""

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from autoscaling import flapping
from autoscaling import safety as safety_nets

STEP = "step"
TARGET_TRACKING = "target_tracking"

# Outcomes, as ScalingDecision.Outcome stores them.
SCALE_OUT = "scale_out"
REPLACE = "replace"
DISABLED = "disabled"
COOLDOWN = "cooldown"
AT_MAX = "at_max"
ALREADY_SCALING = "already_scaling"
NOT_FIRING = "not_firing"
ON_TARGET = "on_target"
NO_METRIC = "no_metric"
NOT_A_SIGNAL = "not_a_signal"
SCALE_IN = "scale_in"
AT_MIN = "at_min"
WARMING_UP = "warming_up"
NO_CANDIDATE = "no_candidate"
NOT_IDLE = "not_idle"
FLAP_HOLD = "flap_hold"
ACTIONS = (SCALE_OUT, REPLACE, SCALE_IN)

# Which VM a scale-in removes first, after the unhealthy ones and those of an older template.
NEWEST = "newest"
OLDEST = "oldest"
# Target tracking scales in only while N - k VMs would stay at or below this share of the target.
SCALE_IN_TARGET_SHARE = 0.9

# Sources of an action, as ScaleOutEvent.Source stores them.
SOURCE_ALERT = "alert"
SOURCE_MANUAL = "manual"
SOURCE_METRIC = "metric"
SOURCE_REPLACE = "replace"
# Held by a safety net (autoscaling/safety.py): a suspended process, or the circuit breaker open.
SUSPENDED = safety_nets.SUSPENDED
BREAKER_OPEN = safety_nets.BREAKER_OPEN


def gettext_noop(message):
    """Marks a message id for translation; the caller translates it."""
    return message


@dataclass(frozen=True)
class Policy:
    type: str = STEP
    enabled: bool = True
    min_instances: int = 1
    max_instances: int = 4
    step: int = 1
    max_step: int = 0  # target tracking: at most this many VMs per action; 0: no limit but max
    cooldown_seconds: int = 300
    target_value: float | None = None  # target tracking: the average the fleet is kept at or below
    service_name: str = ""
    scale_in_enabled: bool = True  # step policy: False when the config has no scale-in threshold
    scale_in_step: int = 1
    scale_in_cooldown_seconds: int = 300
    scale_in_duration_seconds: int = 600  # target tracking: the window whose highest average is judged


@dataclass(frozen=True)
class Fleet:
    in_service: int = 0
    creating: int = 0
    # Whether the inventory knows the service at all (any instance, lost and removed ones included). A service
    # never inventoried (its VMs not adopted yet) is not "below min": replacing would double its real fleet.
    known: bool = True
    # Scale-in: the instances in service that may be removed (not protected; None: all of them), and when the
    # newest VM the portal created came into service (warm-up). Instances an active scale-in already chose are
    # neither in service nor removable here.
    removable: int | None = None
    newest_in_service_at: datetime | None = None
    # VMs that are neither in service nor being created but may still exist: failed (a clone or a removal that
    # failed), draining, being removed, chosen by a scale-in in progress. Max counts them (so no failure mode
    # creates more VMs than max); min does not (they serve nothing).
    held: int = 0

    @property
    def counted(self):
        """What min counts: in service plus being created."""
        return self.in_service + self.creating

    @property
    def toward_max(self):
        """What max counts: every VM that exists or is being created, serving or not."""
        return self.counted + self.held

    @property
    def removable_count(self):
        return self.in_service if self.removable is None else self.removable


@dataclass(frozen=True)
class Signal:
    """What asks for capacity: a firing alert, an operator's request (with a count), a metric's current average
    (target tracking), or nothing (the evaluator found no firing alert: only min is kept)."""

    kind: str  # "alert", "manual", "metric", "none", "idle" (a scale-in alert) or "remove" (an operator's)
    count: int | None = None
    value: float | None = None
    idle_value: float | None = None  # target tracking: the highest average over the scale-in duration

    @classmethod
    def alert(cls):
        return cls("alert")

    @classmethod
    def manual(cls, count=None):
        return cls("manual", count=count)

    @classmethod
    def metric(cls, value, idle_value=None):
        return cls("metric", value=value, idle_value=idle_value)

    @classmethod
    def idle(cls):
        """A firing scale-in alert (the metric below the scale-in threshold for the scale-in duration)."""
        return cls("idle")

    @classmethod
    def remove(cls):
        """An operator removes one chosen instance."""
        return cls("remove", count=1)

    @classmethod
    def none(cls):
        return cls("none")


@dataclass(frozen=True)
class Decision:
    outcome: str
    message: str  # a message id: translate, then format with params
    params: dict = field(default_factory=dict)
    count: int = 0  # VMs to add, or to remove for a scale-in (actions only)
    source: str = ""  # the event's source (actions only)
    dry_run: bool = False  # decided for a dry-run config: recorded, nothing triggered (see `would`)

    @property
    def acts(self):
        return self.outcome in ACTIONS


def _percent(value):
    return f"{round(float(value), 1):g}"


def _tracking(policy, fleet, current):
    """desired, the increase (before the cooldown and the limits in progress), and the formula's parameters."""
    n = fleet.in_service
    target = float(policy.target_value)
    # A float product can land a hair above an integer (2 x 0.7 / 0.35): do not let that add a VM.
    desired = max(math.ceil(n * float(current) / target - 1e-9), 0)
    capped = min(desired, policy.max_instances)
    increase = max(capped - fleet.counted, 0)
    step_capped = policy.max_step and increase > policy.max_step
    if step_capped:
        increase = policy.max_step
    params = {
        "n": n,
        "current": _percent(current),
        "target": _percent(target),
        "desired": desired,
        "max": policy.max_instances,
        "step": policy.max_step,
        "count": increase,
    }
    if desired > policy.max_instances and step_capped:
        message = gettext_noop(
            "%(n)d VMs at %(current)s %% against a target of %(target)s %%: desired ceil(%(n)d x %(current)s / "
            "%(target)s) = %(desired)d, max %(max)d, max step %(step)d: +%(count)d"
        )
    elif desired > policy.max_instances:
        message = gettext_noop(
            "%(n)d VMs at %(current)s %% against a target of %(target)s %%: desired ceil(%(n)d x %(current)s / "
            "%(target)s) = %(desired)d, max %(max)d: +%(count)d"
        )
    elif step_capped:
        message = gettext_noop(
            "%(n)d VMs at %(current)s %% against a target of %(target)s %%: desired ceil(%(n)d x %(current)s / "
            "%(target)s) = %(desired)d, max step %(step)d: +%(count)d"
        )
    else:
        message = gettext_noop(
            "%(n)d VMs at %(current)s %% against a target of %(target)s %%: desired ceil(%(n)d x %(current)s / "
            "%(target)s) = %(desired)d: +%(count)d"
        )
    return increase, message, params


def decide(
    *,
    policy: Policy,
    fleet: Fleet,
    signal: Signal,
    last_action_at: datetime | None,
    active_event_id: int | None,
    now: datetime,
    last_scale_in_at: datetime | None = None,
    recent_actions: tuple = (),
    safety: safety_nets.Safety | None = None,
) -> Decision:
    """The decision for one service (see `_decision`), then the safety nets: `safety` (None: none) says which
    processes an operator suspended and what the circuit breaker knows (autoscaling/safety.py). A held action is
    recorded as "suspended" or "breaker open" with what it would have done."""
    safety = safety or safety_nets.NONE
    inputs = {
        "policy": policy,
        "fleet": fleet,
        "last_action_at": last_action_at,
        "active_event_id": active_event_id,
        "now": now,
        "last_scale_in_at": last_scale_in_at,
        "recent_actions": recent_actions,
    }
    if policy.enabled and signal.kind in ("alert", "idle"):
        held = safety_nets.intake_hold(safety, service_name=policy.service_name)
        if held:
            if not (fleet.known and policy.min_instances > fleet.counted):
                return Decision(*held)
            signal = Signal.none()  # the alert is not acted on, but the minimum is still kept
    decision = _decision(signal=signal, **inputs)
    if not decision.acts:
        return decision
    held = safety_nets.action_hold(
        safety,
        outcome=decision.outcome,
        source=decision.source,
        count=decision.count,
        service_name=policy.service_name,
        now=now,
    )
    if held == "trial":
        params = {"failures": safety.breaker.failures, "service": policy.service_name, "count": 1}
        return Decision(decision.outcome, safety_nets.TRIAL_MESSAGE, params, count=1, source=decision.source)
    if held:
        return Decision(*held)
    return decision


def _decision(
    *,
    policy: Policy,
    fleet: Fleet,
    signal: Signal,
    last_action_at: datetime | None,
    active_event_id: int | None,
    now: datetime,
    last_scale_in_at: datetime | None = None,
    recent_actions: tuple = (),
) -> Decision:
    """The decision for one service, before the safety nets. `last_action_at`: when its newest scale-out began
    (None: never); `active_event_id`: a scale-out still in progress (None: none); `last_scale_in_at`: when its
    newest scale-in began (None: never); `recent_actions`: the service's actions of the last two hours as (time,
    direction) pairs, direction flapping.OUT or flapping.IN, for the flap guard (autoscaling/flapping.py)."""
    service = {"service": policy.service_name}
    if not policy.enabled:
        return Decision(DISABLED, gettext_noop("Autoscaling of “%(service)s” is disabled."), service)

    def scale_in(**kwargs):
        return _scale_in(
            policy=policy,
            fleet=fleet,
            last_scale_in_at=last_scale_in_at,
            active_event_id=active_event_id,
            now=now,
            recent_actions=recent_actions,
            **kwargs,
        )

    if signal.kind == "remove":
        return scale_in(count=1, source=SOURCE_MANUAL, manual=True)
    below_min = max(policy.min_instances - fleet.counted, 0) if fleet.known else 0
    if signal.kind == "idle" and below_min:
        signal = Signal.none()  # lost VMs: the minimum is replaced, whatever the load
    if signal.kind == "idle":
        if policy.type == TARGET_TRACKING:
            return Decision(
                NOT_A_SIGNAL,
                gettext_noop("“%(service)s” tracks a target: the evaluator decides from the metric, not from alerts."),
                service,
            )
        if not policy.scale_in_enabled:
            return Decision(
                NOT_A_SIGNAL,
                gettext_noop("“%(service)s” has no scale-in threshold: it never scales in on its own."),
                service,
            )
        return scale_in(count=policy.scale_in_step, source=SOURCE_ALERT)
    wanted, source, formula = 0, "", None
    if signal.kind == "manual":
        wanted, source = signal.count or policy.step, SOURCE_MANUAL
    elif signal.kind == "alert":
        if policy.type == TARGET_TRACKING:
            return Decision(
                NOT_A_SIGNAL,
                gettext_noop("“%(service)s” tracks a target: the evaluator decides from the metric, not from alerts."),
                service,
            )
        wanted, source = policy.step, SOURCE_ALERT
    elif signal.kind == "metric":
        if signal.value is None:
            if not below_min:
                return Decision(NO_METRIC, gettext_noop("No current value of the metric from Prometheus."))
        else:
            wanted, message, params = _tracking(policy, fleet, signal.value)
            if params["desired"] > fleet.counted or below_min:
                # More capacity wanted: even when max leaves no room, the checks below say why (at max, ...).
                source, formula = SOURCE_METRIC, (message, params)
            elif signal.idle_value is not None and fleet.known and fleet.counted > policy.min_instances:
                count, message, params = _tracking_in(policy, fleet, signal.idle_value)
                if not count:
                    return Decision(NOT_IDLE, message, params)
                return scale_in(count=count, source=SOURCE_METRIC, formula=(message, params))
            else:
                return Decision(
                    ON_TARGET,
                    gettext_noop(
                        "%(n)d VMs at %(current)s %% against a target of %(target)s %%: desired ceil(%(n)d x "
                        "%(current)s / %(target)s) = %(desired)d: no VM to add."
                    ),
                    params,
                )
    elif not below_min:
        return Decision(NOT_FIRING, gettext_noop("No autoscale alert is firing."))

    waiting = _waiting(
        COOLDOWN,
        gettext_noop(
            "In cooldown: the last scale-out began %(ago)d s ago and the cooldown is %(cooldown)d s (until %(until)s)."
        ),
        since=last_action_at,
        seconds=policy.cooldown_seconds,
        now=now,
    )
    if waiting:
        return waiting
    if fleet.held and fleet.toward_max >= policy.max_instances:
        return Decision(
            AT_MAX,
            gettext_noop(
                "At maximum: %(current)d instances running, %(creating)d being created and %(held)d failed or "
                "leaving VM(s) counted; the maximum is %(max)d."
            ),
            {"current": fleet.in_service, "creating": fleet.creating, "held": fleet.held, "max": policy.max_instances},
        )
    if fleet.counted >= policy.max_instances:
        return Decision(
            AT_MAX,
            gettext_noop(
                "At maximum: %(current)d instances running and %(creating)d being created; the maximum is %(max)d."
            ),
            {"current": fleet.in_service, "creating": fleet.creating, "max": policy.max_instances},
        )
    if active_event_id is not None:
        return Decision(
            ALREADY_SCALING,
            gettext_noop("Already scaling: event #%(event)d is still in progress."),
            {"event": active_event_id},
        )

    room = policy.max_instances - fleet.toward_max
    if not source:
        count = min(below_min, room)
        return Decision(
            REPLACE,
            gettext_noop(
                "Below the minimum: %(current)d instances running and %(creating)d being created, minimum "
                "%(min)d: replace %(count)d VM(s)."
            ),
            {"current": fleet.in_service, "creating": fleet.creating, "min": policy.min_instances, "count": count},
            count=count,
            source=SOURCE_REPLACE,
        )
    count = min(max(wanted, below_min), room)
    if formula is not None:
        message, params = formula
        return Decision(SCALE_OUT, message, {**params, "count": count}, count=count, source=source)
    return Decision(
        SCALE_OUT,
        gettext_noop("Scale out by %(count)d VM(s): %(current)d instances running, maximum %(max)d."),
        {"count": count, "current": fleet.counted, "max": policy.max_instances},
        count=count,
        source=source,
    )


def _waiting(outcome, message, *, since, seconds, now):
    """A "wait" decision while `seconds` have not passed since `since` (a cooldown, a warm-up); None otherwise."""
    if since is None or not seconds:
        return None
    ends = since + timedelta(seconds=seconds)
    if now >= ends:
        return None
    params = {"ago": (now - since).total_seconds(), "cooldown": seconds, "until": ends.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return Decision(outcome, message, params)


def _tracking_in(policy, fleet, peak):
    """Target tracking's scale-in: the most VMs (up to the scale-in step, never below min) whose removal keeps the
    scale-in duration's highest average at or below 0.9 x target on the VMs left; (count, message id, params)."""
    n = fleet.in_service
    target = float(policy.target_value)
    limit = SCALE_IN_TARGET_SHARE * target
    most = min(policy.scale_in_step, fleet.counted - policy.min_instances, n - 1)
    count = next((k for k in range(most, 0, -1) if n * float(peak) / (n - k) <= limit + 1e-9), 0)
    fewer = n - max(count, 1)
    params = {
        "n": n,
        "peak": _percent(peak),
        "duration": policy.scale_in_duration_seconds,
        "fewer": fewer,
        "projected": _percent(n * float(peak) / fewer) if fewer else "-",
        "target": _percent(target),
        "limit": _percent(limit),
        "count": count,
    }
    if count:
        message = gettext_noop(
            "%(n)d VMs at most %(peak)s %% over the last %(duration)d s: %(fewer)d VMs would be at %(projected)s %%, "
            "at or below 0.9 x %(target)s %% = %(limit)s %%: -%(count)d"
        )
    else:
        message = gettext_noop(
            "%(n)d VMs at most %(peak)s %% over the last %(duration)d s: %(fewer)d VMs would be at %(projected)s %%, "
            "above 0.9 x %(target)s %% = %(limit)s %%: no VM to remove."
        )
    return count, message, params


def _scale_in(
    *,
    policy,
    fleet,
    count,
    source,
    last_scale_in_at,
    active_event_id,
    now,
    formula=None,
    manual=False,
    recent_actions=(),
):
    """The scale-in checks (see the module's docstring) for a signal that asks to remove `count` VMs."""
    room = fleet.counted - policy.min_instances
    if room < 1:
        return Decision(
            AT_MIN,
            gettext_noop(
                "At minimum: %(current)d instances in service and %(creating)d being created; the minimum is "
                "%(min)d, so no VM is removed."
            ),
            {"current": fleet.in_service, "creating": fleet.creating, "min": policy.min_instances},
        )
    if not manual:
        if active_event_id is not None or fleet.creating:
            if active_event_id is None:
                return Decision(
                    ALREADY_SCALING,
                    gettext_noop("Scaling out: %(creating)d VM(s) still being created; no scale-in until they are up."),
                    {"creating": fleet.creating},
                )
            return Decision(
                ALREADY_SCALING,
                gettext_noop("Scaling out: event #%(event)d is still in progress; no scale-in until it is done."),
                {"event": active_event_id},
            )
        waiting = _waiting(
            WARMING_UP,
            gettext_noop(
                "Warming up: the newest VM came into service %(ago)d s ago, and new VMs warm up for the "
                "scale-out cooldown of %(cooldown)d s (until %(until)s)."
            ),
            since=fleet.newest_in_service_at,
            seconds=policy.cooldown_seconds,
            now=now,
        ) or _waiting(
            COOLDOWN,
            gettext_noop(
                "In scale-in cooldown: the last scale-in began %(ago)d s ago and the scale-in cooldown is "
                "%(cooldown)d s (until %(until)s)."
            ),
            since=last_scale_in_at,
            seconds=policy.scale_in_cooldown_seconds,
            now=now,
        )
        if waiting:
            return waiting
        held = _flap_held(recent_actions, now)
        if held:
            return held
        if not fleet.removable_count:
            return Decision(
                NO_CANDIDATE,
                gettext_noop(
                    "No instance may be removed: all %(current)d instances in service are protected from scale-in."
                ),
                {"current": fleet.in_service},
            )
        count = min(count, room, fleet.removable_count)
    if formula is not None:
        message, params = formula
        return Decision(SCALE_IN, message, {**params, "count": count}, count=count, source=source)
    if manual:
        return Decision(
            SCALE_IN,
            gettext_noop("Remove 1 VM at an operator's request: %(current)d instances in service, minimum %(min)d."),
            {"current": fleet.counted, "min": policy.min_instances},
            count=1,
            source=source,
        )
    return Decision(
        SCALE_IN,
        gettext_noop("Scale in by %(count)d VM(s): %(current)d instances in service, minimum %(min)d."),
        {"count": count, "current": fleet.counted, "min": policy.min_instances},
        count=count,
        source=source,
    )


@dataclass(frozen=True)
class Candidate:
    """An instance in service, as the choice of which VMs a scale-in removes reads it."""

    id: int
    in_service_at: datetime | None
    healthy: bool = True
    template_id: int | None = None
    protected: bool = False
    chosen: bool = False  # already chosen by a scale-in in progress


def instances_to_remove(candidates, *, count, order=NEWEST, template_id=None):
    """The ids of the `count` instances a scale-in removes, in order: unhealthy ones first, then those cloned from a
    template other than `template_id` (the config's current one), then the newest (or, with order OLDEST, the
    oldest) by when they came into service. Protected instances and those already chosen are never returned."""
    eligible = [c for c in candidates if not c.protected and not c.chosen]
    oldest_first = sorted(eligible, key=lambda c: (c.in_service_at is not None, c.in_service_at or 0, c.id))
    by_age = oldest_first if order == OLDEST else list(reversed(oldest_first))
    # A stable sort keeps the age order inside each group.
    ranked = sorted(by_age, key=lambda c: (c.healthy, c.template_id == template_id))
    return [c.id for c in ranked[: max(count, 0)]]


def _flap_held(recent_actions, now):
    """The flap guard's hold on scale-in (autoscaling/flapping.py), as a decision; None when there is none."""
    hold = flapping.scale_in_hold(recent_actions, now=now)
    if hold is None:
        return None
    return Decision(
        FLAP_HOLD,
        gettext_noop(
            "Scale-in held against flapping: %(reversals)d reversals (out, in, out) within an hour, the last "
            "scale-out %(ago)d s ago; no scale-in until %(until)s."
        ),
        {
            "reversals": hold.reversals,
            "ago": (now - hold.since).total_seconds(),
            "until": hold.until.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
    )


# A dry-run action's message: what would have been done, then the decision's own reason (nested as the stored
# messages nest one, common/messages.py).
WOULD = {
    SCALE_OUT: gettext_noop("Dry run, nothing triggered: would scale out by %(count)d VM(s). %(reason)s"),
    REPLACE: gettext_noop("Dry run, nothing triggered: would replace %(count)d VM(s). %(reason)s"),
    SCALE_IN: gettext_noop("Dry run, nothing triggered: would scale in by %(count)d VM(s). %(reason)s"),
}


def would(decision):
    """The decision as a dry-run config records it: the same outcome, count and source, marked dry_run; an action's
    message says what would have been done, its own reason nested as the parameter "reason"."""
    if not decision.acts:
        return replace(decision, dry_run=True)
    nested = {"msgid": decision.message, "params": dict(decision.params)}
    return replace(
        decision, message=WOULD[decision.outcome], params={"count": decision.count, "reason": nested}, dry_run=True
    )
