"""Benchmark of the audit trail (issue 16): what an audited change costs, against the same change unaudited.

    .venv/bin/python benchmarks/bench_audit.py     # ~1 min, SQLite (temp file) and PostgreSQL (127.0.0.1:5432)

For each backend, a fresh database: REPEAT config updates through autoscaling.services.config_update, REPEAT IP
pool creations, and the reconcile's health change of 500 instances (fleet.services.instances_health_set, one
batch), each timed with the audit trail on and, in the same run, with it off (django-auditlog's
disable_auditlog; the explicit records of fleet.services still run, so the batch shows their cost by the
difference only in the line "health batch"). Medians in ms, and the queries of one audited config update.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_DB = "vmas_bench_audit"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
REPEAT = 200
INSTANCES = 500


def timed(fn, repeat):
    samples = []
    for n in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure():
    import django

    django.setup()
    from auditlog.context import disable_auditlog
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from access.models import AuditEntry
    from autoscaling import services
    from autoscaling.models import AutoscalingConfig
    from fleet import services as fleet_services
    from fleet.models import ManagedInstance
    from templates_app.models import VMTemplate

    call_command("migrate", verbosity=0)
    template = VMTemplate.objects.create(name="bench-template", status=VMTemplate.Status.READY)
    config = AutoscalingConfig.objects.create(service_name="bench", template=template, min_instances=1)

    def update(n):
        services.config_update(config=config, data={"threshold": 50 + n % 40})

    def pool(prefix):
        def create(n):
            services.ip_pool_create(
                data={
                    "name": f"{prefix}-{n}",
                    "network": "127.93.0.0/24",
                    "first_address": "127.93.0.10",
                    "last_address": "127.93.0.20",
                }  # fmt: skip
            )

        return create

    instances = ManagedInstance.objects.bulk_create(
        ManagedInstance(config=config, state="in_service", vm_name=f"bench-{n:04d}") for n in range(INSTANCES)
    )

    def health(value):
        def change(_n):
            fleet_services.instances_health_set(changes=[(i.pk, value, "bench") for i in instances])

        return change

    results = {}
    for label, audited in (("off", False), ("on", True)):
        if audited:
            results[label] = (timed(update, REPEAT), timed(pool("on"), REPEAT), timed(health("unhealthy"), 1))
        else:
            with disable_auditlog():
                results[label] = (timed(update, REPEAT), timed(pool("off"), REPEAT), timed(health("healthy"), 1))
    with CaptureQueriesContext(connection) as queries:
        update(1)
    off, on = results["off"], results["on"]
    print(f"  {connection.vendor:10s} config update {off[0]:.2f} -> {on[0]:.2f} ms, pool create {off[1]:.2f} -> "
          f"{on[1]:.2f} ms (audit off -> on, median of {REPEAT}); health batch of {INSTANCES}: {on[2]:.0f} ms with "
          f"its {INSTANCES} entries; {len(queries.captured_queries)} queries per audited update; "
          f"{AuditEntry.objects.count():,} entries")  # fmt: skip


def run_backend(url):
    env = {**os.environ, "DATABASE_URL": url, "LAB_ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "vmautoscale.settings",
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    result = subprocess.run([sys.executable, __file__, "--inner"], cwd=ROOT, env=env, timeout=900)
    if result.returncode:
        raise SystemExit(result.returncode)


def psql(sql):
    subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inner", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.inner:
        measure()
        return
    print("Audit trail: the cost of an audited change (audit off -> on, same run)")
    with tempfile.TemporaryDirectory() as tmp:
        run_backend(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
    psql(f"DROP DATABASE IF EXISTS {PG_DB}")
    psql(f"CREATE DATABASE {PG_DB}")
    try:
        run_backend(f"postgres://postgres@127.0.0.1:5432/{PG_DB}")
    finally:
        psql(f"DROP DATABASE IF EXISTS {PG_DB}")


if __name__ == "__main__":
    main()
