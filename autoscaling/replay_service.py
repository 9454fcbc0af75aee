"""The loader of a replay (autoscaling/replay.py is the pure simulation): reads the service's recorded metric and
fleet size from Prometheus (range queries at the rule's resolution, in pieces Prometheus accepts), its measured
provisioning and drain times from its events, and replays the current policy and, for a comparison before saving,
the edited one over the same series (fetched once).

Edited values are validated as the config's own (the model's fields and clean()); nothing is saved.
"""

import copy
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from autoscaling import rendering, replay
from autoscaling.provisioning import inputs as provisioning
from common.clients import prometheus_client
from common.messages import Message
from events.intake import config_policy

# Periods offered (the issue: up to 30 days), and the default.
PERIODS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_PERIOD = "7d"
# The default resolution gives at most this many steps (30 days at one minute); a chosen step may not give more.
DEFAULT_POINTS = 43200
MAX_POINTS = 50000
# Prometheus refuses a range query of more than 11,000 points per series: ask in pieces below that.
POINTS_PER_QUERY = 10000
# The provisioning time when the service has no succeeded scale-out yet (about what a clone, its customization and
# the F5 health check take), and how many recent events the median is taken over.
DEFAULT_PROVISIONING_SECONDS = 300
MEASURED_EVENTS = 50
# What an edit may change: the policy's fields (not the metric or its expression: those are another series).
POLICY_FIELDS = (
    "threshold",
    "duration_seconds",
    "min_instances",
    "max_instances",
    "scale_out_step",
    "cooldown_seconds",
    "policy_type",
    "target_value",
    "max_scale_out_step",
    "scale_in_threshold",
    "scale_in_duration_seconds",
    "scale_in_cooldown_seconds",
    "scale_in_step",
)
FETCH_TIMEOUT = 30.0


@dataclass
class Recorded:
    """What was recorded over the period: the per-VM average and over how many VMs, at every step."""

    start: float
    end: float
    step: float
    points: list  # [(ts, value)]
    counts: list  # [(ts, VMs up)]
    expression: str
    fetch_seconds: float = 0.0


@dataclass
class ReplayRun:
    """One policy replayed: its config values, the result, how long the replay took."""

    values: dict
    rule: replay.Rule
    result: replay.ReplayResult
    seconds: float


@dataclass
class ReplayReport:
    config_id: int
    service: str
    period: str
    recorded: Recorded
    provisioning_seconds: float
    provisioning_measured: int  # how many events the median is taken from (0: the default)
    drain_seconds: float
    current: ReplayRun
    edited: ReplayRun | None = None
    problems: list = field(default_factory=list)

    @property
    def comparison(self):
        return comparison_text(self.current.result, self.edited.result) if self.edited else ""


def period_parse(*, period=None, step=None):
    """(seconds, step seconds or None: the default) for a period key and an optional step; ValidationError for
    anything else."""
    period = period or DEFAULT_PERIOD
    if period not in PERIODS:
        raise ValidationError(
            {
                "period": [
                    _("Unknown period %(value)r: use one of %(allowed)s.")
                    % {"value": period, "allowed": ", ".join(PERIODS)}
                ]
            }
        )
    seconds = PERIODS[period]
    if step in (None, ""):
        return seconds, None
    try:
        step = float(step)
    except (TypeError, ValueError):
        raise ValidationError({"step": [_("A number of seconds.")]}) from None
    if not math.isfinite(step) or step < 1:
        raise ValidationError({"step": [_("At least 1 second.")]})
    if step > seconds:
        raise ValidationError(
            {"step": [_("At most the period, %(max)d s: a replay needs more than one step.") % {"max": seconds}]}
        )
    if seconds / step > MAX_POINTS:
        raise ValidationError(
            {
                "step": [
                    _("At most %(max)d steps per replay: use a step of at least %(min)d s for this period.")
                    % {"max": MAX_POINTS, "min": math.ceil(seconds / MAX_POINTS)}
                ]
            }  # fmt: skip
        )
    return seconds, step


def policy_values(*, config, overrides=None):
    """The config with `overrides` (policy field -> value) applied to an unsaved copy, validated as the config is
    (field by field, then the model's clean()); ValidationError names every refused field."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(POLICY_FIELDS))
    errors = {name: [_("Not a field a replay can change.")] for name in unknown}
    candidate = copy.copy(config)
    candidate._state = copy.copy(config._state)
    for name, value in overrides.items():
        if name in unknown:
            continue
        model_field = config._meta.get_field(name)
        try:
            setattr(candidate, name, model_field.clean(value, candidate))
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    try:
        candidate.clean()
    except ValidationError as exc:
        # Only what the edit touches: the rest of the config is as saved (and validated when it was).
        refused = {name: messages for name, messages in exc.message_dict.items() if name in POLICY_FIELDS}
        if refused:
            raise ValidationError(refused) from None
    return candidate


def _rule(config):
    return replay.Rule(
        threshold=float(config.threshold),
        duration_seconds=int(config.duration_seconds),
        scale_in_threshold=float(config.scale_in_threshold) if config.scale_in_threshold is not None else None,
        scale_in_duration_seconds=int(config.scale_in_duration_seconds),
    )


def metric_expression(config, ctx=None):
    """The per-VM average the rule alerts on, as provisioning renders it."""
    spec = rendering.ServiceSpec(
        service_name=config.service_name,
        enabled=True,
        metric=config.metric,
        threshold=config.threshold,
        duration_seconds=config.duration_seconds,
        promql_expression=config.promql_expression or "",
    )
    return f"avg({rendering._expression(spec, ctx or provisioning.render_context())})"


def count_expression(config):
    """How many of the service's VMs Prometheus scraped (the average is measured over them). Service names are
    slugs: safe in a matcher."""
    return f'count(up{{service="{config.service_name}"}} == 1)'


def _range(prometheus, expression, start, end, step):
    """[(ts, value)] of a one-series range query, asked in pieces of POINTS_PER_QUERY steps."""
    points = []
    piece = step * (POINTS_PER_QUERY - 1)
    at = start
    while at <= end:
        until = min(at + piece, end)
        for series in prometheus.query_range(expression, at, until, step)[:1]:
            points.extend(series.values)
        at = until + step
    return points


def default_step(*, seconds, evaluation_interval):
    """The rule's resolution (Prometheus' evaluation interval; 1 m, its default, when unknown), but at most
    DEFAULT_POINTS steps over the period."""
    return float(max(evaluation_interval or 60.0, math.ceil(seconds / DEFAULT_POINTS), 1))


def recorded_fetch(*, config, seconds, step=None, now=None, client=None):
    """The service's recorded average and VM count over the `seconds` before `now`, every `step` seconds (None:
    `default_step`); raises IntegrationError when Prometheus cannot answer."""
    end = math.floor(now if now is not None else time.time())
    start = end - seconds
    started = time.perf_counter()
    expression = metric_expression(config)

    def fetch(prometheus):
        resolution = step or default_step(seconds=seconds, evaluation_interval=prometheus.evaluation_interval())
        return (
            resolution,
            _range(prometheus, expression, start, end, resolution),
            _range(prometheus, count_expression(config), start, end, resolution),
        )

    if client is not None:
        step, points, counts = fetch(client)
    else:
        with prometheus_client(timeout=FETCH_TIMEOUT) as prometheus:
            step, points, counts = fetch(prometheus)
    counts = [(ts, int(value)) for ts, value in counts if math.isfinite(value)]
    return Recorded(
        start=start,
        end=end,
        step=step,
        points=points,
        counts=counts,
        expression=expression,
        fetch_seconds=time.perf_counter() - started,
    )


def _durations(config, action):
    """Seconds from the decision to the end of the service's recent succeeded events of `action`, newest first."""
    events = config.events.model
    rows = (
        config.events.filter(action=action, status=events.Status.SUCCEEDED, finished_at__isnull=False)
        .order_by("-created_at")
        .values_list("created_at", "finished_at")[:MEASURED_EVENTS]
    )
    return [(finished - created).total_seconds() for created, finished in rows if finished >= created]


def provisioning_time(*, config):
    """(median seconds from a scale-out's decision to its VM in service, how many events it is measured on);
    DEFAULT_PROVISIONING_SECONDS and 0 when the service never scaled out successfully."""
    durations = _durations(config, config.events.model.Action.SCALE_OUT)
    if not durations:
        return float(DEFAULT_PROVISIONING_SECONDS), 0
    return float(statistics.median(durations)), len(durations)


def drain_time(*, config):
    """The median duration of the service's succeeded scale-ins; its drain deadline when it has none."""
    durations = _durations(config, config.events.model.Action.SCALE_IN)
    return float(statistics.median(durations)) if durations else float(config.drain_timeout_seconds)


def _protected(config):
    states = config.instances.model.State
    return config.instances.filter(state=states.IN_SERVICE, protected_from_scale_in=True).count()


def replay_run(*, config, recorded, provisioning_seconds, drain_seconds, protected=0):
    """Replay one config's policy (saved or an unsaved copy) over a recorded series."""
    started = time.perf_counter()
    rule = _rule(config)
    result = replay.replay(
        # A replay answers "what if it had been enabled": a config is tuned before it is enabled.
        policy=dataclasses.replace(config_policy(config), enabled=True),
        rule=rule,
        points=recorded.points,
        recorded_counts=recorded.counts,
        step=recorded.step,
        provisioning_seconds=provisioning_seconds,
        drain_seconds=drain_seconds,
        protected=protected,
    )
    values = {name: getattr(config, name) for name in POLICY_FIELDS}
    return ReplayRun(values=values, rule=rule, result=result, seconds=time.perf_counter() - started)


def config_replay(*, config, period=None, step=None, overrides=None, now=None, client=None):
    """Replay the config's policy over its recorded metric, and with `overrides` also the edited policy on the same
    series. ValidationError for a bad period, step or value (checked before Prometheus is asked); IntegrationError
    when Prometheus fails."""
    seconds, step = period_parse(period=period, step=step)
    edited = policy_values(config=config, overrides=overrides) if overrides else None
    recorded = recorded_fetch(config=config, seconds=seconds, step=step, now=now, client=client)
    provisioning_seconds, measured = provisioning_time(config=config)
    drain_seconds = drain_time(config=config)
    protected = _protected(config)
    common = {
        "recorded": recorded,
        "provisioning_seconds": provisioning_seconds,
        "drain_seconds": drain_seconds,
        "protected": protected,
    }
    report = ReplayReport(
        config_id=config.pk,
        service=config.service_name,
        period=period or DEFAULT_PERIOD,
        recorded=recorded,
        provisioning_seconds=provisioning_seconds,
        provisioning_measured=measured,
        drain_seconds=drain_seconds,
        current=replay_run(config=config, **common),
        edited=replay_run(config=edited, **common) if edited is not None else None,
    )
    if not recorded.points:
        report.problems.append(_("Prometheus has no data of the service's metric in this period."))
    return report


def _signed(value, digits=0):
    text = f"{round(value, digits):+.{digits}f}"
    return text if text not in ("+0", "-0", "+0.0", "-0.0") else "±0"


def comparison_text(current, edited):
    """ "Would have scaled out 14 times instead of 3, in 2 times instead of 2, +41 VM-hours, 12 minutes above the
    threshold instead of 95." (edited first: it is the one being considered)."""
    return _(
        "Would have scaled out %(out)s instead of %(out_now)s, scaled in %(in)s instead of %(in_now)s, "
        "%(vm_hours)s VM-hours, %(above)s minutes above the threshold instead of %(above_now)s."
    ) % {
        "out": ngettext("%(count)d time", "%(count)d times", edited.scale_outs) % {"count": edited.scale_outs},
        "out_now": current.scale_outs,
        "in": ngettext("%(count)d time", "%(count)d times", edited.scale_ins) % {"count": edited.scale_ins},
        "in_now": current.scale_ins,
        "vm_hours": _signed(edited.vm_hours - current.vm_hours, 1),
        "above": f"{edited.minutes_above:.0f}",
        "above_now": f"{current.minutes_above:.0f}",
    }


def event_reason(event):
    """A would-be event's reason in the reader's language, as a live decision's reason is shown."""
    return str(Message(event.message, event.params))


def _iso(ts):
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _pairs(points):
    return [[ts, value if value is not None and math.isfinite(value) else None] for ts, value in points]


def _run_data(run):
    result = run.result
    return {
        "policy": run.values,
        "scale_outs": result.scale_outs,
        "scale_ins": result.scale_ins,
        "vm_hours": round(result.vm_hours, 3),
        "minutes_above": round(result.minutes_above, 2),
        "replay_seconds": round(run.seconds, 4),
        "events": [
            {
                "at": _iso(event.at),
                "direction": event.direction,
                "count": event.count,
                "source": event.source,
                "fleet_before": event.fleet_before,
                "reason": event_reason(event),
                "reason_msgid": event.message,
                "reason_params": event.params,
            }
            for event in result.events
        ],
        "fleet": [[ts, count] for ts, count in result.fleet],
        "load": _pairs(result.load),
    }


def report_data(report):
    """The report as the API answers it (plain JSON types; NaN as null)."""
    recorded = report.recorded
    current = report.current.result
    return {
        "config": report.config_id,
        "service": report.service,
        "period": report.period,
        "start": _iso(recorded.start),
        "end": _iso(recorded.end),
        "step": recorded.step,
        "provisioning_seconds": report.provisioning_seconds,
        "provisioning_measured_events": report.provisioning_measured,
        "drain_seconds": report.drain_seconds,
        "recorded": {
            "expression": recorded.expression,
            "points": _pairs(recorded.points),
            "fleet": [[ts, count] for ts, count in current.recorded_fleet],
            "vm_hours": round(current.recorded_vm_hours, 3),
            "minutes_above": round(current.recorded_minutes_above, 2),
            "fetch_seconds": round(recorded.fetch_seconds, 4),
        },
        "current": _run_data(report.current),
        "edited": _run_data(report.edited) if report.edited else None,
        "comparison": report.comparison,
        "problems": [str(problem) for problem in report.problems],
    }
