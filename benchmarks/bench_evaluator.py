"""Benchmark of the evaluator (issue 13): one pass over many enabled services with firing alerts.

    .venv/bin/python benchmarks/bench_evaluator.py                       # SQLite in a temp dir, ~30 s
    .venv/bin/python benchmarks/bench_evaluator.py --database postgres   # scratch database vmas_bench_evaluator

Starts its own lab (real Alertmanager and Prometheus) in a temp dir. For 50 and for 500 enabled services, each with
2 instances in service and a firing autoscale alert posted to Alertmanager, it times evaluator passes in-process
and counts their SQL queries:
1. the first pass: every service scales out (an event, a decision and a queued trigger each);
2. the second: every service is now in cooldown, which differs from its last decision: one "cooldown" each;
3. steady passes (the alerts still firing, nothing changed): nothing to record; the median of 5. This is the pass
   the evaluator runs every 15 s for as long as the alerts fire: the goal is under 1 s for 500 services, with a
   query count that does not grow with the services.
Then the same steady pass for target-tracking services (one Prometheus query for all their averages).
Loopback only.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import Lab  # noqa: E402

PG_NAME = "vmas_bench_evaluator"
SIZES = (50, 500)
STEADY_PASSES = 5


def recreate_postgres():
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_NAME}")


def drop_postgres():
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")


def measure(evaluator_pass):
    """(seconds, queries, result) of one pass (a count above 9,000 is reported as 9,000)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    connection.queries_log.clear()  # the log keeps 9,000 queries: a first pass of 500 services fills it
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = evaluator_pass()
        seconds = time.perf_counter() - started
    return seconds, len(queries), result


def seed(n, *, prefix, template, tracking=False):
    from autoscaling.models import AutoscalingConfig
    from fleet.models import ManagedInstance

    configs = AutoscalingConfig.objects.bulk_create(
        AutoscalingConfig(
            service_name=f"{prefix}-{i:04d}",
            template=template,
            enabled=True,
            min_instances=1,
            max_instances=10,
            cooldown_seconds=300,
            policy_type="target_tracking" if tracking else "step",
            target_value=60 if tracking else None,
            promql_expression="vector(40)" if tracking else "",
        )
        for i in range(n)
    )
    ManagedInstance.objects.bulk_create(
        ManagedInstance(config=config, state=ManagedInstance.State.IN_SERVICE, vm_name=f"{config.service_name}-{k}")
        for config in configs
        for k in range(2)
    )
    analyze()
    return [config.service_name for config in configs]


def analyze():
    """Fresh planner statistics after a bulk load (as autovacuum would have them on a live database)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def alerts(alertmanager, services, *, resolved=False):
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    alertmanager.post_alerts(
        [
            {
                "labels": {"alertname": "AutoscaleHighCpu", "service": name, "autoscale": "true", "metric": "cpu"},
                "annotations": {"value": "93"},
                **({"endsAt": now} if resolved else {"startsAt": now}),
            }
            for name in services
        ]
    )


def clear():
    from django_q.models import OrmQ

    from autoscaling.models import AutoscalingConfig
    from events.models import ScaleOutEvent, ScalingDecision
    from fleet.models import ManagedInstance

    ScalingDecision.objects.all().delete()
    ManagedInstance.objects.all().delete()
    ScaleOutEvent.objects.all().delete()
    AutoscalingConfig.objects.all().delete()
    OrmQ.objects.all().delete()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-evaluator-"))
    lab = Lab(run_dir / "lab")
    if args.database == "postgres":
        recreate_postgres()
        database_url = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
    else:
        database_url = f"sqlite:///{run_dir / 'db.sqlite3'}"
    try:
        lab.up(["alertmanager", "prometheus"])
        os.environ.update(
            LAB_ENV_FILE=str(lab.env_file),
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="vmautoscale.settings",
            LOG_LEVEL="WARNING",
            Q_BROKER="orm",
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from common.clients import alertmanager_client
        from events.evaluator import evaluator_pass
        from templates_app.models import VMTemplate

        template = VMTemplate.objects.create(name="bench-template", status="ready")
        print(
            f"database {args.database}; lab Alertmanager + Prometheus; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs"
        )
        ok = True
        steady_queries = {}
        with alertmanager_client(timeout=30) as alertmanager:
            for n in SIZES:
                services = seed(n, prefix=f"step{n}", template=template)
                alerts(alertmanager, services)
                first = measure(evaluator_pass)
                second = measure(evaluator_pass)
                steady = [measure(evaluator_pass) for _ in range(STEADY_PASSES)]
                seconds = statistics.median(s for s, _q, _r in steady)
                queries = {q for _s, q, _r in steady}
                recorded = {len(r.decisions) for _s, _q, r in steady}
                print(
                    f"{n:4d} step services, {first[2].firing} firing alerts:"
                    f" first pass (all scale out: {len(first[2].actions)} events) {first[0] * 1000:.0f} ms,"
                    f" {first[1]} queries;"
                    f" second (all enter cooldown: {len(second[2].decisions)} recorded) {second[0] * 1000:.0f} ms,"
                    f" {second[1]} queries;"
                    f" steady {seconds * 1000:.0f} ms median ({min(s for s, _q, _r in steady) * 1000:.0f}-"
                    f"{max(s for s, _q, _r in steady) * 1000:.0f}), queries {sorted(queries)}, recorded {recorded}"
                )
                ok = ok and len(first[2].actions) == n and recorded == {0} and len(queries) == 1
                ok = ok and (n < 500 or seconds < 1.0)
                steady_queries[f"step {n}"] = queries.pop()
                alerts(alertmanager, services, resolved=True)
                clear()
            for n in SIZES:
                seed(n, prefix=f"track{n}", template=template, tracking=True)
                first = measure(evaluator_pass)
                steady = [measure(evaluator_pass) for _ in range(STEADY_PASSES)]
                seconds = statistics.median(s for s, _q, _r in steady)
                queries = {q for _s, q, _r in steady}
                print(
                    f"{n:4d} target-tracking services (at 40 % against 60 %): first pass ({len(first[2].decisions)}"
                    f" 'on target' recorded) {first[0] * 1000:.0f} ms, {first[1]} queries; steady"
                    f" {seconds * 1000:.0f} ms median, queries {sorted(queries)} (one Prometheus query for all)"
                )
                ok = ok and len(queries) == 1 and (n < 500 or seconds < 1.0)
                steady_queries[f"tracking {n}"] = queries.pop()
                clear()
        constant = steady_queries["step 50"] == steady_queries["step 500"]
        constant = constant and steady_queries["tracking 50"] == steady_queries["tracking 500"]
        print(f"steady-pass queries by size: {steady_queries} ({'constant' if constant else 'NOT constant'})")
        ok = ok and constant
    finally:
        lab.stop()
        if args.database == "postgres":
            from django.db import connections

            connections.close_all()
            drop_postgres()
    print("OK" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
