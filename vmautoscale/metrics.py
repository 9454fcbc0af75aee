"""The portal's own metrics for Prometheus, served at /metrics.

The portal runs as several gunicorn workers plus a task cluster, so no process holds the whole picture in memory.
Every figure is therefore read from the database when Prometheus scrapes, by a custom collector, in a fixed number
of aggregate queries (GROUP BY and filtered counts). The event history's counters (notifications, decisions,
events, steps, and the trigger latency and step duration histograms) are kept as the history is written: a
checkpoint holds the figures of the rows that can no longer change, and a scrape adds only the rows after it
(events/history.py), so its cost does not grow with the history and pruning old rows never lowers a counter. The
provisioning history is trimmed to its newest rows, so its figures are gauges over the last hour instead.
The portal's own alert rules (autoscaling/rendering.py, `portal_rules_text`) watch these figures: failed scale-outs
and scale-ins per service, open circuit breakers, open orphans, the last provisioning pass and the evaluator's last
pass.
Set METRICS_TOKEN to require `Authorization: Bearer <token>` on /metrics (empty: open).
"""

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, Sum, TextField
from django.db.models.functions import Cast
from django.db.models.lookups import Contains
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from autoscaling.models import AutoscalingConfig, ProvisioningRun, ProvisioningState
from events.history import STEP_DURATION_BUCKETS, TRIGGER_LATENCY_BUCKETS, SecondsBetween, history_figures
from events.models import AlertNotification, EvaluatorState, ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance, Orphan

PROVISIONING_WINDOW = timedelta(hours=1)

NOTIFICATION_STATUSES = ("firing", "resolved")
RELOADED_SYSTEMS = ("prometheus", "alertmanager")


def breaker_open_services():
    """The services whose circuit breaker is open (issue 15, item 1), for `vmautoscale_breaker_open`: one query
    (consecutive failed scale-outs at or above SCALE_OUT_BREAKER_FAILURES; 0 turns the breaker off)."""
    from autoscaling.models import CircuitBreaker
    from autoscaling.safety_services import breaker_threshold

    threshold = breaker_threshold()
    if threshold <= 0:
        return set()
    return set(CircuitBreaker.objects.filter(failures__gte=threshold).values_list("config__service_name", flat=True))


def _seconds(value):
    return float(value or 0.0)


def _le(bound):
    return f"{float(bound)}"


def _buckets(histogram, bounds):
    """Prometheus' (le, cumulative count) pairs of a stored histogram (None: no observation)."""
    counts = (histogram or {}).get("buckets") or [0] * len(bounds)
    return [(_le(b), n) for b, n in zip(bounds, counts, strict=True)] + [("+Inf", (histogram or {}).get("count", 0))]


class PortalCollector(Collector):
    """Reads the portal's figures from the database at scrape time, in a fixed number of queries: the event
    history's from its checkpoint plus the rows after it (events/history.py), the rest from small tables."""

    def collect(self):
        history = history_figures()
        yield self._notifications(history)
        yield from self._decider()
        yield self._decisions(history)
        yield from self._events(history)
        yield self._trigger_latency(history)
        yield from self._steps(history)
        configs, services = self._configs()
        yield configs
        yield from self._failures(history, services)
        yield self._breakers(services)
        yield from self._provisioning()
        yield self._fleet()
        yield self._orphans()
        yield from self._evaluator()

    def _notifications(self, history):
        family = CounterMetricFamily(
            "vmautoscale_alert_notifications",
            "Alertmanager webhook notifications received, by the notification's status.",
            labels=["status"],
        )
        counts = {**dict.fromkeys(NOTIFICATION_STATUSES, 0), **history["notifications"]}
        for status, n in sorted(counts.items()):
            family.add_metric([status], n)
        return family

    def _decider(self):
        waiting = GaugeMetricFamily(
            "vmautoscale_decider_waiting_notifications",
            "Webhook notifications stored and not decided yet (the decider decides them behind the answers).",
        )
        oldest = GaugeMetricFamily(
            "vmautoscale_decider_oldest_waiting_seconds",
            "How long the oldest notification not decided yet has waited (0: none waits).",
        )
        # The waiting notifications' index holds only them: a small count whatever the history's size.
        row = AlertNotification.objects.filter(decided_at__isnull=True).aggregate(
            n=Count("id"), oldest=Min("received_at")
        )
        waiting.add_metric([], row["n"])
        oldest.add_metric([], (timezone.now() - row["oldest"]).total_seconds() if row["oldest"] else 0)
        return [waiting, oldest]

    def _decisions(self, history):
        family = CounterMetricFamily(
            "vmautoscale_scaling_decisions",
            "Scaling decisions taken for alerts and manual requests, by outcome (scale_out or why not); "
            'dry_run="true": those of dry-run configs (what they would have done).',
            labels=["outcome", "dry_run"],
        )
        counts = {**dict.fromkeys(ScalingDecision.Outcome.values, 0), **history["decisions"]}
        dry_run = history.get("dry_run_decisions") or {}
        for outcome, n in counts.items():
            would = dry_run.get(outcome, 0)
            family.add_metric([outcome, "false"], n - would)
            family.add_metric([outcome, "true"], would)
        return family

    def _events(self, history):
        by_status = GaugeMetricFamily(
            "vmautoscale_scale_out_events",
            "Scale-out events by current status (those pruned by the retention by the status they ended with).",
            labels=["status"],
        )
        created = CounterMetricFamily("vmautoscale_scale_out_events_created", "Scale-out events created.")
        attempts = CounterMetricFamily(
            "vmautoscale_jenkins_trigger_attempts", "Attempts to start a scale-out's Jenkins build (retries included)."
        )
        counts = {**dict.fromkeys(ScaleOutEvent.Status.values, 0), **history["events"]}
        for status, n in counts.items():
            by_status.add_metric([status], n)
        created.add_metric([], sum(counts.values()))
        attempts.add_metric([], history["attempts"])
        return [by_status, created, attempts]

    def _trigger_latency(self, history):
        latency = history["trigger_latency"].get("") or {}
        return HistogramMetricFamily(
            "vmautoscale_trigger_latency_seconds",
            "Time from a scale-out event's creation to its Jenkins build being triggered.",
            buckets=_buckets(latency, TRIGGER_LATENCY_BUCKETS),
            sum_value=float(latency.get("sum", 0.0)),
        )

    def _steps(self, history):
        steps = CounterMetricFamily(
            "vmautoscale_pipeline_steps",
            "Pipeline steps reported by Jenkins, by step and status.",
            labels=["step", "status"],
        )
        for key, n in sorted(history["steps"].items()):
            step, _sep, status = key.partition("/")
            steps.add_metric([step, status], n)

        durations = HistogramMetricFamily(
            "vmautoscale_pipeline_step_duration_seconds",
            "Duration of finished pipeline steps (started to finished), by step.",
            labels=["step"],
        )
        for step, histogram in sorted(history["step_durations"].items()):
            durations.add_metric([step], _buckets(histogram, STEP_DURATION_BUCKETS), sum_value=histogram["sum"])
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
        duration = SecondsBetween("started_at", "finished_at")
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
        # One row per config (a small table): the counts, and the services every per-service series lists at 0.
        services = []
        rows = AutoscalingConfig.objects.order_by("service_name").values_list("service_name", "enabled", "sync_state")
        for service, enabled, state in rows:
            services.append(service)
            key = ("true" if enabled else "false", state)
            counts[key] = counts.get(key, 0) + 1
        for (enabled, state), n in counts.items():
            family.add_metric([enabled, state], n)
        return family, services

    def _failures(self, history, services):
        family = CounterMetricFamily(
            "vmautoscale_scaling_failures",
            "Scale-outs and scale-ins that failed (the pipeline stopped on an error, undone or not), by service and "
            "action; every config's service is listed from 0, so a first failure is an increase.",
            labels=["service", "action"],
        )
        counts = {(service, action): 0 for service in services for action in ScaleOutEvent.Action.values}
        for key, n in history.get("failures", {}).items():
            service, _sep, action = key.partition("/")
            counts[(service, action)] = counts.get((service, action), 0) + n
        for (service, action), n in sorted(counts.items()):
            family.add_metric([service, action], n)
        last = GaugeMetricFamily(
            "vmautoscale_scaling_last_failure_timestamp_seconds",
            "When the last failed scale-out or scale-in of a service ended (unix time; absent before its first).",
            labels=["service", "action"],
        )
        for key, at in sorted(history.get("failure_last", {}).items()):
            service, _sep, action = key.partition("/")
            last.add_metric([service, action], at)
        return [family, last]

    def _breakers(self, services):
        family = GaugeMetricFamily(
            "vmautoscale_breaker_open",
            "1 while a service's circuit breaker is open (its scaling suspended after consecutive failed "
            "scale-outs), else 0.",
            labels=["service"],
        )
        opened = breaker_open_services()
        for service in services:
            family.add_metric([service], 1 if service in opened else 0)
        return family

    def _orphans(self):
        family = GaugeMetricFamily(
            "vmautoscale_orphans",
            "Open orphans (found by the orphan sweep and not removed yet: VMs with the portal's marker, F5 members, "
            "IP allocations), by kind.",
            labels=["kind"],
        )
        counts = dict.fromkeys(Orphan.Kind.values, 0)
        # The open ones only: the index of the constraint "one open orphan per thing" covers exactly these rows.
        open_orphans = Orphan.objects.filter(state__in=Orphan.OPEN_STATES).order_by()
        for row in open_orphans.values("kind").annotate(n=Count("pk")):
            counts[row["kind"]] = row["n"]
        for kind, n in counts.items():
            family.add_metric([kind], n)
        return family

    def _evaluator(self):
        interval = GaugeMetricFamily(
            "vmautoscale_evaluator_interval_seconds",
            "How often the evaluator should pass (EVALUATOR_INTERVAL; 0: it is off).",
        )
        interval.add_metric([], settings.EVALUATOR_INTERVAL)
        last_at = GaugeMetricFamily(
            "vmautoscale_evaluator_last_pass_timestamp_seconds",
            "When the evaluator's last pass ended (unix time; absent before the first).",
        )
        last_failed = GaugeMetricFamily(
            "vmautoscale_evaluator_last_pass_failed",
            "1 when the evaluator's last pass failed or could not read Alertmanager or Prometheus, else 0.",
        )
        state = EvaluatorState.objects.filter(pk=1).values("last_pass_at", "last_error").first()
        if state and state["last_pass_at"]:
            last_at.add_metric([], state["last_pass_at"].timestamp())
            last_failed.add_metric([], 1 if state["last_error"] else 0)
        return [interval, last_at, last_failed]

    def _fleet(self):
        family = GaugeMetricFamily(
            "vmautoscale_fleet_instances",
            "Instances in each service's inventory, by lifecycle state (min and max count in_service plus pending "
            "and provisioning).",
            labels=["service", "state"],
        )
        rows = (
            ManagedInstance.objects.order_by()
            .values("config__service_name", "state")
            .annotate(n=Count("pk"))
            .values_list("config__service_name", "state", "n")
        )
        counts = {}
        for service, state, n in rows:
            counts.setdefault(service, dict.fromkeys(ManagedInstance.State.values, 0))[state] = n
        for service, states in sorted(counts.items()):
            for state, n in states.items():
                family.add_metric([service, state], n)
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
