"""Selectors behind the monitoring dashboard: metrics from Prometheus, alerts from Alertmanager, recent events.

Reads only. Prometheus and Alertmanager are reached through their integration clients; an outage of either is
reported as a `SourceProblem` (which system, and why) so the page can still render what it has.
"""

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db.models import Sum
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from autoscaling import rendering
from autoscaling.models import AutoscalingConfig
from autoscaling.provisioning import inputs as provisioning
from common.clients import alertmanager_client, prometheus_client
from events.models import ScaleOutEvent
from fleet.selectors import config_fleet_size_points, fleet_counts, fleet_size_points_by_config
from integrations.errors import IntegrationError

# range key -> (seconds, step): a step that gives about 240 points, so charts stay detailed but light.
# Each range at most twice the one before (up to a day), so the fitted one is always at least half full.
RANGES = {
    "15m": (900, 5),
    "30m": (1800, 10),
    "1h": (3600, 15),
    "2h": (2 * 3600, 30),
    "3h": (3 * 3600, 45),
    "6h": (6 * 3600, 90),
    "12h": (12 * 3600, 180),
    "24h": (24 * 3600, 360),
    "7d": (7 * 86400, 2520),
}
# When the data cannot tell (no service shown yet).
DEFAULT_RANGE = "1h"
# The longest range chosen for the reader: past a day the charts are full anyway, and a week hides today's events.
LONGEST_DEFAULT_RANGE = "24h"
METRICS = (AutoscalingConfig.Metric.CPU, AutoscalingConfig.Metric.MEMORY)
METRIC_LABELS = {
    AutoscalingConfig.Metric.CPU: gettext_lazy("CPU usage"),
    AutoscalingConfig.Metric.MEMORY: gettext_lazy("Memory usage"),
}
AUTOSCALE_LABELS = {"autoscale": "true"}
LATEST_EVENTS = 10


class InvalidRange(ValueError):
    """The range asked for is not one the dashboard offers; the message lists the allowed values."""


@dataclass
class SourceProblem:
    system: str
    message: str

    @property
    def system_label(self):
        return {"prometheus": "Prometheus", "alertmanager": "Alertmanager"}.get(self.system, self.system)


@dataclass
class MetricSeries:
    metric: str
    label: str
    expression: str
    points: list  # [(unix ts, float)]
    threshold: float | None  # set on the metric the service scales on
    scale_in_threshold: float | None = None  # the same, when the config scales in

    @property
    def latest(self):
        return self.points[-1][1] if self.points else None


@dataclass
class ServiceMetrics:
    service: str
    range: str
    start: float
    end: float
    step: int
    series: list[MetricSeries]
    fleet_size: list = field(default_factory=list)  # [(unix ts, instances in service)], a step series
    scaling_events: list = field(default_factory=list)  # [ScalingMarker] in the range, oldest first


@dataclass(frozen=True)
class ScalingMarker:
    """Where the service scaled out or in: one event, at its creation."""

    event_id: int
    action: str  # ScaleOutEvent.Action
    at: float  # unix seconds
    vm_count: int
    status: str
    status_label: str
    action_label: str


@dataclass
class FiringAlert:
    name: str
    service: str
    severity: str
    summary: str
    value: str
    starts_at: object
    labels: dict
    fingerprint: str


@dataclass
class ServicePanel:
    config: AutoscalingConfig
    instances: int  # in service, from the inventory
    creating: int  # being created: recorded by scale-outs still running, or still to be recorded
    targets_up: int | None
    metrics: ServiceMetrics | None
    query_error: str = ""  # Prometheus refused this service's query
    alerts: list = field(default_factory=list)
    # From the portal's own database, so they are drawn while Prometheus is down too: the fleet's size over the
    # range (start, end, step) and the scaling events in it.
    fleet_size: list = field(default_factory=list)
    scaling_events: list = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    step: int = 0

    @property
    def at_max(self):
        return self.instances + self.creating >= self.config.max_instances

    @property
    def below_min(self):
        return self.instances < self.config.min_instances


@dataclass
class Dashboard:
    range: str
    panels: list[ServicePanel]
    alerts: list[FiringAlert]
    events: list
    problems: list[SourceProblem]
    generated_at: float


def range_fit(*, data_seconds):
    """The shortest range that holds `data_seconds` of history (capped at LONGEST_DEFAULT_RANGE), so a chart is
    not mostly empty: a service set up 10 minutes ago gets 15m, one a few hours old 6h. None: DEFAULT_RANGE."""
    if data_seconds is None:
        return DEFAULT_RANGE
    for key, (seconds, _step) in RANGES.items():
        if data_seconds <= seconds or key == LONGEST_DEFAULT_RANGE:
            return key
    return LONGEST_DEFAULT_RANGE


def range_default(*, configs, now=None):
    """The range a page or API call without ?range= shows: fitted to the oldest of the services' configs (their
    monitoring began when they were created)."""
    created = [config.created_at for config in configs if config.created_at]
    if not created:
        return DEFAULT_RANGE
    now = now if now is not None else time.time()
    return range_fit(data_seconds=now - min(created).timestamp())


def range_parse(*, value, default=DEFAULT_RANGE):
    """The range key to use: `default` when none is given; InvalidRange for anything not offered."""
    if value in (None, ""):
        return default
    if value not in RANGES:
        raise InvalidRange(
            _("Unknown range %(value)r: use one of %(allowed)s.") % {"value": value, "allowed": ", ".join(RANGES)}
        )
    return value


def metric_expression(*, config, metric, render_context=None):
    """The PromQL of a service's metric (a percentage), as provisioning writes it into the alert rule.

    The metric the service scales on uses the config's custom expression when it has one; the other metric is
    charted with provisioning's default expression for it.
    """
    if metric == config.metric and config.promql_expression.strip():
        return config.promql_expression.strip()
    spec = rendering.ServiceSpec(
        service_name=config.service_name,
        enabled=config.enabled,
        metric=metric,
        threshold=config.threshold,
        duration_seconds=config.duration_seconds,
    )
    return rendering.default_expression(spec, render_context or provisioning.render_context())


@contextlib.contextmanager
def _using(client, factory):
    """The caller's client as it is, or a new one from `factory` that is closed afterwards."""
    if client is not None:
        yield client
        return
    with factory() as own:
        yield own


def range_bounds(*, range_key, now=None):
    """(start, end, step) of a range ending now, in unix seconds."""
    seconds, step = RANGES[range_key]
    end = round(now if now is not None else time.time(), 3)
    return end - seconds, end, step


def service_metrics_get(*, config, range_key, now=None, client=None, render_context=None, history=None):
    """CPU and memory of one service over a range, with its fleet's size and its scaling events; raises
    IntegrationError when Prometheus fails. `history`: (fleet_size, scaling_events) already read for the range
    (the dashboard reads them for all its services at once)."""
    start, end, step = range_bounds(range_key=range_key, now=now)
    render_context = render_context or provisioning.render_context()
    series = []
    with _using(client, prometheus_client) as prometheus:
        for metric in METRICS:
            expression = metric_expression(config=config, metric=metric, render_context=render_context)
            result = prometheus.query_range(expression, start, end, step)
            points = [(float(ts), float(value)) for ts, value in (result[0].values if result else [])]
            scales_on = metric == config.metric
            series.append(
                MetricSeries(
                    metric=metric,
                    label=str(METRIC_LABELS[metric]),
                    expression=expression,
                    points=points,
                    threshold=config.threshold if scales_on else None,
                    scale_in_threshold=config_scale_in_threshold(config=config) if scales_on else None,
                )
            )
    if history is None:
        history = (
            config_fleet_size_points(config=config, start=start, end=end),
            scaling_markers_by_config(config_ids=[config.pk], start=start, end=end)[config.pk],
        )
    fleet_size, scaling_events = history
    return ServiceMetrics(
        service=config.service_name,
        range=range_key,
        start=start,
        end=end,
        step=step,
        series=series,
        fleet_size=fleet_size,
        scaling_events=scaling_events,
    )


def config_scale_in_threshold(*, config):
    """The config's scale-in threshold when it has one set (scale-in adds the field; until then: None)."""
    value = getattr(config, "scale_in_threshold", None)
    return float(value) if value is not None else None


def scaling_markers_by_config(*, config_ids, start, end):
    """{config id: its scale-outs and scale-ins created within [start, end] (unix seconds), oldest first}, in one
    query."""
    markers = {config_id: [] for config_id in config_ids}
    events = (
        ScaleOutEvent.objects.filter(
            config_id__in=list(config_ids),
            created_at__gte=datetime.fromtimestamp(start, UTC),
            created_at__lte=datetime.fromtimestamp(end, UTC),
        )
        .order_by("created_at", "pk")
        .only("pk", "config_id", "action", "created_at", "vm_count", "status")
    )
    for event in events:
        markers[event.config_id].append(
            ScalingMarker(
                event_id=event.pk,
                action=event.action,
                at=event.created_at.timestamp(),
                vm_count=event.vm_count,
                status=event.status,
                status_label=str(event.get_status_display()),
                action_label=str(event.get_action_display()),
            )
        )
    return markers


def targets_up_get(*, service_names, client=None):
    """service -> number of its scrape targets Prometheus sees up; raises IntegrationError when Prometheus fails."""
    if not service_names:
        return {}
    # Service names are slugs (validated on the model), safe inside a regex and a label matcher.
    pattern = "|".join(service_names)
    with _using(client, prometheus_client) as prometheus:
        result = prometheus.query(f'sum by (service) (up{{service=~"{pattern}"}})')
    counts = dict.fromkeys(service_names, 0)
    for sample in result:
        service = sample.labels.get("service")
        if service in counts:
            counts[service] = int(sample.value or 0)
    return counts


def alerts_firing_list(*, service=None, client=None):
    """The portal's autoscale alerts that Alertmanager has active now; raises IntegrationError on failure."""
    matchers = dict(AUTOSCALE_LABELS)
    if service:
        matchers["service"] = service
    with _using(client, alertmanager_client) as alertmanager:
        active = alertmanager.alerts(matchers, active=True, silenced=False, inhibited=False, unprocessed=True)
    alerts = []
    for alert in active:
        labels = dict(alert.labels)
        annotations = dict(alert.annotations)
        alerts.append(
            FiringAlert(
                name=labels.get("alertname", ""),
                service=labels.get("service", ""),
                severity=labels.get("severity", ""),
                summary=_alert_summary(labels, annotations),
                value=annotations.get("value", ""),
                starts_at=alert.starts_at,
                labels=labels,
                fingerprint=alert.fingerprint,
            )
        )
    alerts.sort(key=lambda a: (a.service, a.name))
    return alerts


def _alert_summary(labels, annotations):
    """The alert's summary in the reader's language: the portal's rules carry the parts (service, metric,
    threshold); the pushed annotation stays English, as what is pushed never changes with a language."""
    metric, threshold = labels.get("metric"), annotations.get("threshold")
    if labels.get("service") and metric in AutoscalingConfig.Metric.values and threshold:
        return _("%(service)s: %(metric)s above %(threshold)s %%") % {
            "service": labels["service"],
            "metric": AutoscalingConfig.Metric(metric).label,
            "threshold": threshold,
        }
    return annotations.get("summary") or annotations.get("description", "")


def events_latest(*, service=None, limit=LATEST_EVENTS):
    events = ScaleOutEvent.objects.select_related("config").order_by("-created_at", "-id")
    if service:
        events = events.filter(service_name=service)
    return list(events[:limit])


def dashboard_configs(*, service=None):
    """The services the dashboard shows: every enabled config, or the one asked for (enabled or not)."""
    if service:
        return list(AutoscalingConfig.objects.filter(service_name=service))
    return list(AutoscalingConfig.objects.filter(enabled=True).order_by("service_name"))


def dashboard_get(*, configs, range_key, service=None, now=None):
    """Everything the dashboard shows. Never raises for an outage: it lands in `problems` instead."""
    problems = []
    render_context = provisioning.render_context()
    # One time for every service, so their fleet histories and scaling events come in one query each.
    now = now if now is not None else time.time()
    start, end, step = range_bounds(range_key=range_key, now=now)
    config_ids = [c.pk for c in configs]
    fleet_sizes = fleet_size_points_by_config(config_ids=config_ids, start=start, end=end)
    markers = scaling_markers_by_config(config_ids=config_ids, start=start, end=end)
    creating = dict(
        ScaleOutEvent.objects.filter(config__in=configs, status__in=ScaleOutEvent.ACTIVE_STATUSES)
        .values("config")
        .annotate(vms=Sum("vm_count"))
        .values_list("config", "vms")
    )
    fleet = fleet_counts(config_ids=[c.pk for c in configs])
    targets_up = {}
    metrics = {}
    query_errors = {}
    prometheus_problem = None
    with prometheus_client() as prometheus:
        try:
            targets_up = targets_up_get(service_names=[c.service_name for c in configs], client=prometheus)
            for config in configs:
                try:
                    metrics[config.pk] = service_metrics_get(
                        config=config,
                        range_key=range_key,
                        now=now,
                        client=prometheus,
                        render_context=render_context,
                        history=(fleet_sizes[config.pk], markers[config.pk]),
                    )
                except IntegrationError as exc:
                    if not exc.permanent:
                        raise
                    # Prometheus answered but refused this service's query (e.g. its custom expression).
                    query_errors[config.pk] = exc.message
        except IntegrationError as exc:
            # Prometheus is down or failing: skip the other services' queries (one time-out, not one per service).
            prometheus_problem = SourceProblem(system="prometheus", message=exc.message)
    panels = [
        ServicePanel(
            config=config,
            instances=fleet[config.pk].in_service,
            creating=max(fleet[config.pk].creating, creating.get(config.pk) or 0),
            targets_up=targets_up.get(config.service_name),
            metrics=metrics.get(config.pk),
            query_error=query_errors.get(config.pk, ""),
            fleet_size=fleet_sizes[config.pk],
            scaling_events=markers[config.pk],
            start=start,
            end=end,
            step=step,
        )
        for config in configs
    ]
    if prometheus_problem:
        problems.append(prometheus_problem)

    alerts = []
    try:
        alerts = alerts_firing_list(service=service)
    except IntegrationError as exc:
        problems.append(SourceProblem(system="alertmanager", message=exc.message))
    for panel in panels:
        panel.alerts = [a for a in alerts if a.service == panel.config.service_name]

    return Dashboard(
        range=range_key,
        panels=panels,
        alerts=alerts,
        events=events_latest(service=service),
        problems=problems,
        generated_at=time.time(),
    )
