"""Benchmark of /metrics over a long event history (issue 19): a scrape at 1,000,000 events.

    .venv/bin/python benchmarks/bench_history.py                    # PostgreSQL, scratch database vmas_bench_history
    .venv/bin/python benchmarks/bench_history.py --database sqlite  # SQLite in a temp dir
    .venv/bin/python benchmarks/bench_history.py --events 100000    # a smaller history

Fills the history with SQL (INSERT ... SELECT over a generated series): N finished events spread over the last
year, each with 3 pipeline steps, its notification and its decision, plus 20 events in progress. Then, in the same
run, it renders /metrics in-process (5 scrapes each, the median):
1. baseline: no checkpoint yet, every row aggregated at each scrape (what /metrics did before);
2. after `history_fold()` (timed apart): only the rows after the checkpoint are read;
and checks that both give the same figures. Then `history_prune()` with the default retention, timed, and a scrape
after it (the counters unchanged). Loopback only; the scratch database is dropped afterwards.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_NAME = "vmas_bench_history"
SCRAPES = 5


def postgres(sql):
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(sql)


def literal(field, value):
    """The SQL literal of a field's default (raw INSERTs must give every NOT NULL column)."""
    import json

    from django.db import connection

    prepared = field.get_db_prep_save(value, connection)
    if prepared is None:
        return "NULL"
    if hasattr(prepared, "dumps"):  # psycopg's Jsonb wrapper
        prepared = json.dumps(prepared.obj)
    if isinstance(prepared, bool):
        return ("TRUE" if prepared else "FALSE") if connection.vendor == "postgresql" else str(int(prepared))
    if isinstance(prepared, (int, float)):
        return str(prepared)
    return "'" + str(prepared).replace("'", "''") + "'"


def insert_select(model, exprs, source):
    """INSERT INTO model's table (every column) SELECT exprs (column -> SQL) FROM source."""
    from django.db import connection

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and field.name not in exprs:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in exprs:
            values.append(exprs[field.column])
        elif field.has_default():
            values.append(literal(field, field.get_default()))
        elif field.null:
            values.append("NULL")
        else:
            values.append("''")
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}"
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql)
    print(f"  {model._meta.db_table}: {time.perf_counter() - started:.1f} s", flush=True)


def series_and_clock(n, pg):
    """The generated series of s.i = 1..n, and `at(seconds)`: the SQL of a time that many seconds after a year ago."""
    if pg:

        def at(seconds_expr):
            return f"(now() - interval '366 days' + ({seconds_expr}) * interval '1 second')"

        return f"generate_series(1, {n}) AS s(i)", at

    def at(seconds_expr):
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-366 days', '+' || ({seconds_expr}) || ' seconds')"

    return f"(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) SELECT i FROM c) s", at


def steps_and_decisions(series, at, base, *, service, config_id):
    """Each event s.i's three succeeded steps and the decision that created it (SQL expressions of s.i)."""
    from events.models import EventAction, ScalingDecision

    for k, step in enumerate(("ip_allocate", "vm_clone", "f5_add")):
        insert_select(
            EventAction,
            {
                "id": f"s.i * 3 + {k}",
                "event_id": "s.i",
                "step": f"'{step}'",
                "status": "'succeeded'",
                "started_at": at(f"{base} + 10 + {k * 60}"),
                "finished_at": at(f"{base} + 10 + {k * 60} + s.i % 50"),
            },
            series,
        )
    insert_select(
        ScalingDecision,
        {
            "id": "s.i",
            "notification_id": "s.i",
            "service_name": service,
            "config_id": config_id,
            "outcome": "'scale_out'",
            "reason": "'bench'",
            "event_id": "s.i",
            "decided_at": at(base),
        },
        series,
    )


def fill(n, config):
    from django.db import connection, transaction

    from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision

    pg = connection.vendor == "postgresql"
    series, at = series_and_clock(n, pg)
    spacing = 366 * 86400 // (n + 1)
    base = f"s.i * {spacing}"
    with transaction.atomic():
        insert_select(
            AlertNotification,
            {
                "id": "s.i",
                "service_name": "'web'",
                "config_id": str(config.pk),
                "status": "CASE WHEN s.i % 2 = 0 THEN 'firing' ELSE 'resolved' END",
                "group_key": "'g'",
                "payload": "'{}'",
                "received_at": at(base),
            },
            series,
        )
        insert_select(
            ScaleOutEvent,
            {
                "id": "s.i",
                "config_id": str(config.pk),
                "service_name": "'web'",
                "status": "CASE WHEN s.i % 10 = 0 THEN 'failed' ELSE 'succeeded' END",
                "notification_id": "s.i",
                "trigger_attempts": "1",
                "created_at": at(base),
                "triggered_at": at(f"{base} + 1 + s.i % 7"),
                "started_at": at(f"{base} + 10"),
                "finished_at": at(f"{base} + 200 + s.i % 300"),
                "updated_at": at(f"{base} + 200 + s.i % 300"),
            },
            series,
        )
        steps_and_decisions(series, at, base, service="'web'", config_id=str(config.pk))
    if pg:
        with connection.cursor() as cursor:
            for model in (AlertNotification, ScaleOutEvent, EventAction, ScalingDecision):
                table = model._meta.db_table
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            cursor.execute("ANALYZE")
    for _ in range(20):
        ScaleOutEvent.objects.create(config=config, service_name="web", status="running")


def scrapes(render):
    times = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        text = render()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times), text


def history_lines(text):
    wanted = (
        "vmautoscale_alert_notifications",
        "vmautoscale_scaling_decisions",
        "vmautoscale_scale_out_events",
        "vmautoscale_jenkins_trigger",
        "vmautoscale_trigger_latency",
        "vmautoscale_pipeline_step",
    )
    return sorted(line for line in text.decode().splitlines() if line.startswith(wanted))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    if args.database == "postgres":
        postgres(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        postgres(f"CREATE DATABASE {PG_NAME}")
        database_url = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
    else:
        database_url = f"sqlite:///{run_dir / 'db.sqlite3'}"
    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="vmautoscale.settings", LOG_LEVEL="WARNING")
    ok = True
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        call_command("migrate", verbosity=0)
        from autoscaling.models import AutoscalingConfig
        from events import history
        from templates_app.models import VMTemplate
        from vmautoscale.metrics import render_metrics

        config = AutoscalingConfig.objects.create(
            service_name="web", template=VMTemplate.objects.create(name="bench-template")
        )
        median, low, high, _text = scrapes(render_metrics)
        print(
            f"empty history (the floor, same machine, same run): /metrics {median * 1000:.1f} ms median "
            f"({low * 1000:.1f}-{high * 1000:.1f})"
        )
        floor = median
        started = time.perf_counter()
        fill(args.events, config)
        print(
            f"database {args.database}; {args.events:,} finished events with 3 steps, a notification and a decision "
            f"each, filled in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs"
        )
        median, low, high, before = scrapes(render_metrics)
        print(
            f"baseline (no checkpoint: every row aggregated): /metrics {median * 1000:.0f} ms median "
            f"({low * 1000:.0f}-{high * 1000:.0f})"
        )
        started = time.perf_counter()
        history.history_fold()
        print(
            f"history_fold (once, then every 5 minutes over the new rows only): {time.perf_counter() - started:.1f} s"
        )
        with CaptureQueriesContext(connection) as queries:
            median, low, high, after = scrapes(render_metrics)
        print(
            f"with the checkpoint: /metrics {median * 1000:.1f} ms median ({low * 1000:.1f}-{high * 1000:.1f}), "
            f"{len(queries) // SCRAPES} queries per scrape; {median / floor:.2f} x the empty history's"
        )
        same = history_lines(before) == history_lines(after)
        print(f"same figures before and after the fold: {same}")
        # The goal is 50 ms on a quiet machine; on a loaded one, compare with the empty history in the same run.
        ok = same and (median < 0.05 or median < 2 * floor)
        started = time.perf_counter()
        done = history.history_prune()
        print(
            f"history_prune (HISTORY_RETENTION_DAYS 90, EVENT_RETENTION_DAYS 730): {done} in "
            f"{time.perf_counter() - started:.1f} s"
        )
        median, low, high, pruned = scrapes(render_metrics)
        same = history_lines(pruned) == history_lines(after)
        print(f"after pruning: /metrics {median * 1000:.1f} ms median, same counters: {same}")
        ok = ok and same
    finally:
        if args.database == "postgres":
            from django.db import connections

            connections.close_all()
            postgres(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
    print("OK" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
