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
"""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
ACTIONS = (SCALE_OUT, REPLACE)

# Sources of an action, as ScaleOutEvent.Source stores them.
SOURCE_ALERT = "alert"
SOURCE_MANUAL = "manual"
SOURCE_METRIC = "metric"
SOURCE_REPLACE = "replace"


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


@dataclass(frozen=True)
class Fleet:
    in_service: int = 0
    creating: int = 0
    # Whether the inventory knows the service at all (any instance, lost and removed ones included). A service
    # never inventoried (its VMs not adopted yet) is not "below min": replacing would double its real fleet.
    known: bool = True

    @property
    def counted(self):
        """What min and max count: in service plus being created."""
        return self.in_service + self.creating


@dataclass(frozen=True)
class Signal:
    """What asks for capacity: a firing alert, an operator's request (with a count), a metric's current average
    (target tracking), or nothing (the evaluator found no firing alert: only min is kept)."""

    kind: str  # "alert", "manual", "metric" or "none"
    count: int | None = None
    value: float | None = None

    @classmethod
    def alert(cls):
        return cls("alert")

    @classmethod
    def manual(cls, count=None):
        return cls("manual", count=count)

    @classmethod
    def metric(cls, value):
        return cls("metric", value=value)

    @classmethod
    def none(cls):
        return cls("none")


@dataclass(frozen=True)
class Decision:
    outcome: str
    message: str  # a message id: translate, then format with params
    params: dict = field(default_factory=dict)
    count: int = 0  # VMs to add (actions only)
    source: str = ""  # the event's source (actions only)

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
) -> Decision:
    """The decision for one service. `last_action_at`: when its newest scale-out began (None: never);
    `active_event_id`: a scale-out still in progress (None: none)."""
    service = {"service": policy.service_name}
    if not policy.enabled:
        return Decision(DISABLED, gettext_noop("Autoscaling of “%(service)s” is disabled."), service)

    below_min = max(policy.min_instances - fleet.counted, 0) if fleet.known else 0
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

    if last_action_at is not None and policy.cooldown_seconds:
        ends = last_action_at + timedelta(seconds=policy.cooldown_seconds)
        if now < ends:
            return Decision(
                COOLDOWN,
                gettext_noop(
                    "In cooldown: the last scale-out began %(ago)d s ago and the cooldown is %(cooldown)d s "
                    "(until %(until)s)."
                ),
                {
                    "ago": (now - last_action_at).total_seconds(),
                    "cooldown": policy.cooldown_seconds,
                    "until": ends.strftime("%Y-%m-%d %H:%M:%S %Z"),
                },
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

    room = policy.max_instances - fleet.counted
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
