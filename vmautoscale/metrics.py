"""The portal's own metrics for Prometheus, served at /metrics.

The portal runs as several gunicorn workers plus a task cluster, so no process holds the whole picture in memory.
Every figure is therefore read from the database when Prometheus scrapes, by a custom collector: a fixed number of
aggregate queries (GROUP BY and filtered counts), whatever the number of rows. Counters are counts of stored rows,
which is right for tables the portal keeps whole (notifications, decisions, events, steps). The provisioning
history is trimmed to its newest rows, so its figures are gauges over the last hour instead.

Histograms are built from stored durations the same way: one filtered count per bucket, cumulative, in one query.
Set METRICS_TOKEN to require `Authorization: Bearer <token>` on /metrics (empty: open).
"""

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Sum, TextField
from django.db.models.functions import Cast
from django.db.models.lookups import Contains, LessThanOrEqual
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from autoscaling.models import AutoscalingConfig, ProvisioningRun, ProvisioningState
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision

# Seconds. Triggering is a queue hop plus one Jenkins call; pipeline steps go from a ping to a VM clone.
TRIGGER_LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
STEP_DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
PROVISIONING_WINDOW = timedelta(hours=1)

NOTIFICATION_STATUSES = ("firing", "resolved")
RELOADED_SYSTEMS = ("prometheus", "alertmanager")


def _duration(start, end):
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _seconds(value):
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000  # a backend that returns microseconds


def _bucket_aggregates(start, end, buckets):
    """Counts of rows whose end - start falls within each bucket (cumulative), plus the total count and sum."""
    duration = _duration(start, end)
    aggregates = {
        f"le_{i}": Count("pk", filter=LessThanOrEqual(duration, timedelta(seconds=b))) for i, b in enumerate(buckets)
    }
    aggregates["count"] = Count("pk")
    aggregates["sum"] = Sum(duration)
    return aggregates


def _histogram_buckets(row, buckets):
    return [(_le(b), row[f"le_{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["count"])]


def _le(bound):
    return f"{float(bound)}"


class PortalCollector(Collector):
    """Reads the portal's figures from the database at scrape time (9 queries, whatever the row count)."""

    def collect(self):
        yield self._notifications()
        yield self._decisions()
        yield from self._events()
        yield self._trigger_latency()
        yield from self._steps()
        yield from self._provisioning()
        yield self._configs()

    def _notifications(self):
        family = CounterMetricFamily(
            "vmautoscale_alert_notifications",
            "Alertmanager webhook notifications received, by the notification's status.",
            labels=["status"],
        )
        counts = dict.fromkeys(NOTIFICATION_STATUSES, 0)
        for row in AlertNotification.objects.order_by().values("status").annotate(n=Count("pk")):
            counts[row["status"]] = row["n"]
        for status, n in sorted(counts.items()):
            family.add_metric([status], n)
        return family

    def _decisions(self):
        family = CounterMetricFamily(
            "vmautoscale_scaling_decisions",
            "Scaling decisions taken for alerts and manual requests, by outcome (scale_out or why not).",
            labels=["outcome"],
        )
        counts = dict.fromkeys(ScalingDecision.Outcome.values, 0)
        for row in ScalingDecision.objects.order_by().values("outcome").annotate(n=Count("pk")):
            counts[row["outcome"]] = row["n"]
        for outcome, n in counts.items():
            family.add_metric([outcome], n)
        return family

    def _events(self):
        by_status = GaugeMetricFamily(
            "vmautoscale_scale_out_events", "Scale-out events stored, by current status.", labels=["status"]
        )
        created = CounterMetricFamily("vmautoscale_scale_out_events_created", "Scale-out events created.")
        attempts = CounterMetricFamily(
            "vmautoscale_jenkins_trigger_attempts", "Attempts to start a scale-out's Jenkins build (retries included)."
        )
        counts = dict.fromkeys(ScaleOutEvent.Status.values, 0)
        total_attempts = 0
        for row in (
            ScaleOutEvent.objects.order_by().values("status").annotate(n=Count("pk"), attempts=Sum("trigger_attempts"))
        ):
            counts[row["status"]] = row["n"]
            total_attempts += row["attempts"] or 0
        for status, n in counts.items():
            by_status.add_metric([status], n)
        created.add_metric([], sum(counts.values()))
        attempts.add_metric([], total_attempts)
        return [by_status, created, attempts]

    def _trigger_latency(self):
        row = (
            ScaleOutEvent.objects.filter(triggered_at__isnull=False)
            .order_by()
            .aggregate(**_bucket_aggregates("created_at", "triggered_at", TRIGGER_LATENCY_BUCKETS))
        )
        return HistogramMetricFamily(
            "vmautoscale_trigger_latency_seconds",
            "Time from a scale-out event's creation to its Jenkins build being triggered.",
            buckets=_histogram_buckets(row, TRIGGER_LATENCY_BUCKETS),
            sum_value=_seconds(row["sum"]),
        )

    def _steps(self):
        steps = CounterMetricFamily(
            "vmautoscale_pipeline_steps",
            "Pipeline steps reported by Jenkins, by step and status.",
            labels=["step", "status"],
        )
        for row in EventAction.objects.order_by().values("step", "status").annotate(n=Count("pk")):
            steps.add_metric([row["step"], row["status"]], row["n"])

        durations = HistogramMetricFamily(
            "vmautoscale_pipeline_step_duration_seconds",
            "Duration of finished pipeline steps (started to finished), by step.",
            labels=["step"],
        )
        rows = (
            EventAction.objects.filter(started_at__isnull=False, finished_at__isnull=False)
            .order_by()
            .values("step")
            .annotate(**_bucket_aggregates("started_at", "finished_at", STEP_DURATION_BUCKETS))
        )
        for row in rows:
            durations.add_metric(
                [row["step"]], _histogram_buckets(row, STEP_DURATION_BUCKETS), sum_value=_seconds(row["sum"])
            )
        return [steps, durations]

    def _provisioning(self):
        # The provisioning history is trimmed to its newest rows, so counts over all rows would stall or fall:
        # these figures cover a recent window instead (gauges), and the last pass comes from the state row.
        since = timezone.now() - PROVISIONING_WINDOW
        window = f"{PROVISIONING_WINDOW.total_seconds() / 3600:g} h"
        passes = GaugeMetricFamily(
            "vmautoscale_provisioning_passes_last_hour",
            f"Provisioning passes (reconciles of the monitoring host and Jenkins) requested in the last {window}, "
            "by result.",
            labels=["status"],
        )
        reloads = GaugeMetricFamily(
            "vmautoscale_provisioning_reloads_last_hour",
            f"Reloads of Prometheus and Alertmanager by provisioning passes in the last {window}, by system.",
            labels=["system"],
        )
        errors = GaugeMetricFamily(
            "vmautoscale_provisioning_errors_last_hour", f"Provisioning passes that failed in the last {window}."
        )
        duration_avg = GaugeMetricFamily(
            "vmautoscale_provisioning_pass_duration_avg_seconds",
            f"Mean duration of the provisioning passes that ran in the last {window} (absent when none ran).",
        )
        duration_max = GaugeMetricFamily(
            "vmautoscale_provisioning_pass_duration_max_seconds",
            f"Longest provisioning pass in the last {window} (absent when none ran).",
        )
        counts = dict.fromkeys(ProvisioningRun.Status.values, 0)
        reloaded = dict.fromkeys(RELOADED_SYSTEMS, 0)
        # `reloads` is a JSON list of system names; its text form holds each name quoted, on every backend.
        reloads_text = Cast("reloads", TextField())
        duration = _duration("started_at", "finished_at")
        rows = (
            ProvisioningRun.objects.filter(requested_at__gte=since)
            .order_by()
            .values("status")
            .annotate(
                n=Count("pk"),
                ran=Count(duration),
                total=Sum(duration),
                longest=Max(duration),
                **{
                    f"reloaded_{system}": Count("pk", filter=Contains(reloads_text, f'"{system}"'))
                    for system in RELOADED_SYSTEMS
                },
            )
        )
        ran, total, longest = 0, 0.0, None
        for row in rows:
            counts[row["status"]] = row["n"]
            for system in RELOADED_SYSTEMS:
                reloaded[system] += row[f"reloaded_{system}"]
            if row["ran"]:
                ran += row["ran"]
                total += _seconds(row["total"])
                longest = max(longest or 0.0, _seconds(row["longest"]))
        for status, n in counts.items():
            passes.add_metric([status], n)
        for system, n in reloaded.items():
            reloads.add_metric([system], n)
        errors.add_metric([], counts[ProvisioningRun.Status.FAILED])
        if ran:
            duration_avg.add_metric([], total / ran)
            duration_max.add_metric([], longest)

        last_at = GaugeMetricFamily(
            "vmautoscale_provisioning_last_pass_timestamp_seconds",
            "When the last provisioning pass that pushed finished (unix time; absent before the first).",
        )
        last_failed = GaugeMetricFamily(
            "vmautoscale_provisioning_last_pass_failed", "1 when the last provisioning pass failed, else 0."
        )
        state = ProvisioningState.objects.filter(pk=1).values("last_pass_at", "last_status").first()
        if state and state["last_pass_at"]:
            last_at.add_metric([], state["last_pass_at"].timestamp())
            last_failed.add_metric([], 1 if state["last_status"] == ProvisioningRun.Status.FAILED else 0)
        return [passes, reloads, errors, duration_avg, duration_max, last_at, last_failed]

    def _configs(self):
        family = GaugeMetricFamily(
            "vmautoscale_autoscaling_configs",
            "Autoscaling configs, by whether they are enabled and their sync state with the monitoring host.",
            labels=["enabled", "sync_state"],
        )
        counts = {(e, s): 0 for e in ("true", "false") for s in AutoscalingConfig.SyncState.values}
        for row in AutoscalingConfig.objects.order_by().values("enabled", "sync_state").annotate(n=Count("pk")):
            counts[("true" if row["enabled"] else "false", row["sync_state"])] = row["n"]
        for (enabled, state), n in counts.items():
            family.add_metric([enabled, state], n)
        return family


def render_metrics():
    """The exposition text of the portal's metrics (a fresh registry: only the portal's figures, no process ones)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return generate_latest(registry)


def _authorized(request):
    token = settings.METRICS_TOKEN
    if not token:
        return True
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


@require_GET
def metrics_view(request):
    if not _authorized(request):
        message = _("Unauthorized: present the METRICS_TOKEN as a bearer token.")
        response = HttpResponse(message + "\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # The classic text format (0.0.4): what every Prometheus 2.x parses; all our names are plain ASCII anyway.
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
