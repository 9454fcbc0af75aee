"""The event history's figures, kept as they are written, and its retention.

/metrics reports counters over the whole history (notifications by status, decisions by outcome, events by status,
failed scale-outs and scale-ins by service, trigger attempts, the trigger latency histogram, pipeline steps by step
and status, step durations). Counting every stored row at each scrape grows with the history; so the history is
folded: the MetricsCheckpoint row holds the figures of every row up to `through`, and a scrape adds only the rows
after it (the tail: the last minutes of notifications and decisions, the events still in progress or finished since,
and their steps). `history_fold` (every 5 minutes, events.tasks.history_maintain) moves `through` up to FOLD_LAG
before now: rows are folded once they can no longer change (an event only once it has finished; its steps with it),
and the lag leaves room for a transaction that commits a little after the time it wrote.

Retention (`history_prune`, daily from the same task, and `manage.py prune_history`): notifications with their
decisions and the decisions of manual requests and the evaluator after HISTORY_RETENTION_DAYS, the steps of events
finished that long ago, and finished events after EVENT_RETENTION_DAYS (0 keeps them). Only folded rows are pruned,
so the counters never go down.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import NotSupportedError, connection, transaction
from django.db.models import Count, F, FloatField, Func, Max, Q, Sum
from django.utils import timezone

from events.models import AlertNotification, EventAction, MetricsCheckpoint, ScaleOutEvent, ScalingDecision

logger = logging.getLogger(__name__)

# Seconds. Triggering is a queue hop plus one Jenkins call; pipeline steps go from a ping to a VM clone.
TRIGGER_LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
STEP_DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
FOLD_LAG = timedelta(minutes=5)
PRUNE_EVERY = timedelta(days=1)
PRUNE_BATCH = 5000
Status = ScaleOutEvent.Status
# An event that ended in one of these failed: the pipeline stopped on an error (undone or not).
FAILED_STATUSES = (Status.FAILED, Status.ROLLED_BACK)


class SecondsBetween(Func):
    """`end - start` in seconds (a float), computed by the database itself.

    Django's own datetime subtraction runs a Python function per row on SQLite, which made a scrape of a few
    thousand pipeline steps take most of a second; julianday() and EXTRACT(EPOCH ...) are native.
    """

    output_field = FloatField()

    def __init__(self, start, end):
        super().__init__(F(start), F(end))

    def as_sql(self, compiler, connection, **extra_context):
        start_sql, start_params = compiler.compile(self.source_expressions[0])
        end_sql, end_params = compiler.compile(self.source_expressions[1])
        if connection.vendor == "sqlite":
            sql = f"((julianday({end_sql}) - julianday({start_sql})) * 86400.0)"
        elif connection.vendor == "postgresql":
            sql = f"(EXTRACT(EPOCH FROM ({end_sql} - {start_sql})))::double precision"
        else:
            raise NotSupportedError(f"SecondsBetween: no SQL for {connection.vendor}")
        return sql, (*end_params, *start_params)


def _can_materialize():
    if connection.vendor == "sqlite":
        return connection.Database.sqlite_version_info >= (3, 35, 0)
    return connection.vendor == "postgresql" and connection.pg_version >= 120000


def histogram(queryset, start, end, buckets, group_by=None):
    """{group value (or ""): {"buckets": cumulative counts per bound, "count", "sum"}} of `end - start` over the rows.

    The duration is computed once per row in a materialized subquery, then bucketed by the outer query: filtered
    aggregates over the expression itself recompute it for every bucket (half the scrape time on SQLite).
    """
    columns = [group_by] if group_by else []
    inner = queryset.order_by().annotate(duration_s=SecondsBetween(start, end)).values(*columns, "duration_s")
    inner_sql, params = inner.query.sql_with_params()
    quote = connection.ops.quote_name
    duration = f"d.{quote('duration_s')}"
    cases = ", ".join(f"SUM(CASE WHEN {duration} <= %s THEN 1 ELSE 0 END)" for _bound in buckets)
    group = f"d.{quote(group_by)}" if group_by else None
    select = ", ".join(filter(None, [group, "COUNT(*)", f"SUM({duration})", cases]))
    # MATERIALIZED keeps the database from inlining the subquery (and the duration into every CASE) again.
    materialized = "MATERIALIZED " if _can_materialize() else ""
    sql = f"WITH d AS {materialized}({inner_sql}) SELECT {select} FROM d" + (f" GROUP BY {group}" if group else "")
    result = {}
    with connection.cursor() as cursor:
        # The CTE (and its parameters) comes first in the text, then the bucket bounds.
        cursor.execute(sql, [*params, *(float(bound) for bound in buckets)])
        for row in cursor.fetchall():
            key, row = (row[0], row[1:]) if group else ("", row)
            count, total, cumulative = row[0], row[1], row[2:]
            if not count:
                continue
            result[key] = {"buckets": [n or 0 for n in cumulative], "count": count, "sum": float(total or 0.0)}
    return result


def _figures(*, notifications, decisions, events, steps):
    """The history's figures over these rows, as plain data (what the checkpoint stores)."""
    figures = {
        "notifications": {
            row["status"]: row["n"] for row in notifications.order_by().values("status").annotate(n=Count("pk"))
        },
        "decisions": {},
        # Of those, a dry-run config's (what it would have done): /metrics labels them dry_run="true".
        "dry_run_decisions": {},
        "events": {},
        # "service/action" -> the events of that service and action that failed, and when the last of them ended
        # (unix time): the portal's own alert rules watch these.
        "failures": {},
        "failure_last": {},
        "attempts": 0,
    }
    for row in decisions.order_by().values("outcome", "dry_run").annotate(n=Count("pk")):
        for key in ("decisions", "dry_run_decisions") if row["dry_run"] else ("decisions",):
            figures[key][row["outcome"]] = figures[key].get(row["outcome"], 0) + row["n"]
    rows = events.order_by().values("status", "service_name", "action")
    for row in rows.annotate(n=Count("pk"), attempts=Sum("trigger_attempts"), last=Max("finished_at")):
        events_by_status = figures["events"]
        events_by_status[row["status"]] = events_by_status.get(row["status"], 0) + row["n"]
        figures["attempts"] += row["attempts"] or 0
        if row["status"] in FAILED_STATUSES:
            key = f"{row['service_name']}/{row['action']}"
            figures["failures"][key] = figures["failures"].get(key, 0) + row["n"]
            if row["last"] is not None:
                last = row["last"].timestamp()
                figures["failure_last"][key] = max(figures["failure_last"].get(key, 0.0), last)
    figures["trigger_latency"] = histogram(
        events.filter(triggered_at__isnull=False), "created_at", "triggered_at", TRIGGER_LATENCY_BUCKETS
    )
    figures["steps"] = {
        f"{row['step']}/{row['status']}": row["n"]
        for row in steps.order_by().values("step", "status").annotate(n=Count("pk"))
    }
    figures["step_durations"] = histogram(
        steps.filter(started_at__isnull=False, finished_at__isnull=False),
        "started_at",
        "finished_at",
        STEP_DURATION_BUCKETS,
        group_by="step",
    )
    return figures


COUNTS = ("notifications", "decisions", "dry_run_decisions", "events", "failures", "steps")
HISTOGRAMS = ("trigger_latency", "step_durations")
LATEST = ("failure_last",)


def _add_histograms(a, b):
    if not a:
        return b
    if not b:
        return a
    return {
        "buckets": [x + y for x, y in zip(a["buckets"], b["buckets"], strict=True)],
        "count": a["count"] + b["count"],
        "sum": a["sum"] + b["sum"],
    }


def add_figures(a, b):
    """a + b, figure by figure (histograms bucket by bucket, the latest times by their maximum)."""
    total = {"attempts": a.get("attempts", 0) + b.get("attempts", 0)}
    for name in COUNTS:
        x, y = a.get(name) or {}, b.get(name) or {}
        total[name] = {key: x.get(key, 0) + y.get(key, 0) for key in x.keys() | y.keys()}
    for name in HISTOGRAMS:
        x, y = a.get(name) or {}, b.get(name) or {}
        total[name] = {key: _add_histograms(x.get(key), y.get(key)) for key in x.keys() | y.keys()}
    for name in LATEST:
        x, y = a.get(name) or {}, b.get(name) or {}
        total[name] = {key: max(x.get(key, 0.0), y.get(key, 0.0)) for key in x.keys() | y.keys()}
    return total


def _checkpoint():
    return MetricsCheckpoint.objects.filter(pk=1).values("through", "figures").first() or {"through": None}


def history_figures():
    """The whole history's figures: the checkpoint's plus the rows after it (a fixed number of queries, and only
    the tail is read)."""
    checkpoint = _checkpoint()
    through = checkpoint["through"]
    if through is None:
        return _figures(
            notifications=AlertNotification.objects.all(),
            decisions=ScalingDecision.objects.all(),
            events=ScaleOutEvent.objects.all(),
            steps=EventAction.objects.all(),
        )
    events = ScaleOutEvent.objects.filter(Q(finished_at__isnull=True) | Q(finished_at__gt=through))
    tail = _figures(
        notifications=AlertNotification.objects.filter(received_at__gt=through),
        decisions=ScalingDecision.objects.filter(decided_at__gt=through),
        events=events,
        # A semi-join on the few events of the tail (not a join over every step).
        steps=EventAction.objects.filter(event_id__in=events.values("pk")),
    )
    return add_figures(checkpoint["figures"], tail)


def history_fold(*, now=None):
    """Fold the rows that can no longer change, up to FOLD_LAG before now, into the checkpoint. Returns the new
    `through` (None when there was nothing to move)."""
    now = now or timezone.now()
    upto = now - FOLD_LAG
    with transaction.atomic():
        MetricsCheckpoint.objects.get_or_create(pk=1)
        checkpoint = MetricsCheckpoint.objects.select_for_update().get(pk=1)
        since = checkpoint.through
        if since is not None and upto <= since:
            return None

        def window(field):
            return Q(**{f"{field}__lte": upto}) & (Q(**{f"{field}__gt": since}) if since is not None else Q())

        finished = window("finished_at") & Q(status__in=ScaleOutEvent.FINAL_STATUSES)
        step_window = window("event__finished_at") & Q(event__status__in=ScaleOutEvent.FINAL_STATUSES)
        folded = _figures(
            notifications=AlertNotification.objects.filter(window("received_at")),
            decisions=ScalingDecision.objects.filter(window("decided_at")),
            events=ScaleOutEvent.objects.filter(finished),
            steps=EventAction.objects.filter(step_window),
        )
        checkpoint.figures = add_figures(checkpoint.figures or {}, folded)
        checkpoint.through = upto
        checkpoint.folded_at = now
        checkpoint.save(update_fields=["figures", "through", "folded_at"])
    return upto


def _delete_in_batches(queryset):
    """Delete the rows in batches of PRUNE_BATCH (short transactions); the number deleted."""
    total = 0
    while True:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return total
        with transaction.atomic():
            total += queryset.model.objects.filter(pk__in=ids)._raw_delete(connection.alias)


def history_prune(*, now=None, dry_run=False):
    """Delete what the retention settings let go, among the folded rows only. Returns {what: rows}."""
    now = now or timezone.now()
    history_fold(now=now)
    through = _checkpoint()["through"]
    if through is None:
        return {}
    done = {}
    days = settings.HISTORY_RETENTION_DAYS
    if days:
        cutoff = min(now - timedelta(days=days), through)
        targets = {
            "decisions": ScalingDecision.objects.filter(decided_at__lte=cutoff),
            "notifications": AlertNotification.objects.filter(received_at__lte=cutoff),
            "steps": EventAction.objects.filter(
                event__finished_at__lte=cutoff, event__status__in=ScaleOutEvent.FINAL_STATUSES
            ),
        }
        for what, rows in targets.items():
            done[what] = rows.count() if dry_run else _delete_rows(what, rows)
    days = settings.EVENT_RETENTION_DAYS
    if days:
        cutoff = min(now - timedelta(days=days), through)
        events = ScaleOutEvent.objects.filter(finished_at__lte=cutoff, status__in=ScaleOutEvent.FINAL_STATUSES)
        done["events"] = events.count() if dry_run else _delete_events(events)
    if not dry_run:
        MetricsCheckpoint.objects.filter(pk=1).update(pruned_at=now)
        if any(done.values()):
            logger.info("history pruned: %s", ", ".join(f"{n} {what}" for what, n in done.items()))
    return done


def _delete_rows(what, rows):
    if what != "notifications":
        return _delete_in_batches(rows)
    total = 0
    while True:
        ids = list(rows.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return total
        with transaction.atomic():
            # Their decisions go with them (a foreign key with CASCADE), their events keep pointing nowhere.
            ScalingDecision.objects.filter(notification_id__in=ids)._raw_delete(connection.alias)
            ScaleOutEvent.objects.filter(notification_id__in=ids).update(notification=None)
            total += AlertNotification.objects.filter(pk__in=ids)._raw_delete(connection.alias)


def _delete_events(events):
    """Finished events with what refers to them: their steps and decisions go, instances and IP allocations keep
    their rows with the event cleared (the ORM's own delete does that, batch by batch)."""
    total = 0
    while True:
        ids = list(events.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return total
        with transaction.atomic():
            ScalingDecision.objects.filter(event_id__in=ids).update(event=None)
            EventAction.objects.filter(event_id__in=ids)._raw_delete(connection.alias)
            _deleted, per_model = ScaleOutEvent.objects.filter(pk__in=ids).delete()
            total += per_model.get(ScaleOutEvent._meta.label, 0)


def history_maintain(*, now=None):
    """Every 5 minutes: fold; once a day, prune."""
    now = now or timezone.now()
    through = history_fold(now=now)
    pruned_at = MetricsCheckpoint.objects.filter(pk=1).values_list("pruned_at", flat=True).first()
    pruned = {}
    if pruned_at is None or now - pruned_at >= PRUNE_EVERY:
        pruned = history_prune(now=now)
    return {"through": through.isoformat() if through else None, "pruned": pruned}
