"""Benchmark of the portal's /metrics (issue 9): the cost of one scrape as the stored history grows.

    .venv/bin/python benchmarks/bench_ops.py            # ~1-2 min, loopback only
    .venv/bin/python benchmarks/bench_ops.py --quick    # a tenth of the rows

Every figure of /metrics is computed from the database at scrape time, so the scrape cost follows the row counts.
For SQLite (temp file) and PostgreSQL (127.0.0.1:5432, trust auth; the database `vmas_bench_ops` is recreated and
dropped), it fills a fresh database with notifications, decisions, scale-out events with their pipeline steps and
provisioning passes, then times the rendering of the exposition (median / min / max of REPEAT scrapes) and counts
its queries.
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
PG_DB = "vmas_bench_ops"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
REPEAT = 10
# Full-size history: 20,000 scale-outs with 6 steps each, 2 notifications and 4 decisions per scale-out.
EVENTS = 20_000


def fill(events):
    from datetime import timedelta

    from django.utils import timezone

    from autoscaling.models import AutoscalingConfig, ProvisioningRun
    from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
    from templates_app.models import VMTemplate

    template = VMTemplate.objects.create(name="bench-template")
    configs = [
        AutoscalingConfig.objects.create(service_name=f"svc-{i:02d}", template=template, enabled=True)
        for i in range(20)
    ]
    statuses = ScaleOutEvent.Status.values
    outcomes = ScalingDecision.Outcome.values
    steps = ["ip_allocate", "vm_clone", "vm_customize", "vm_power_on", "vm_guest_ip", "f5_add"]
    now = timezone.now()
    batch = 2000
    for start in range(0, events, batch):
        count = min(batch, events - start)
        notifications = AlertNotification.objects.bulk_create(
            AlertNotification(
                service_name=configs[i % 20].service_name,
                status="firing" if i % 2 else "resolved",
                group_key="{}:{}",
                payload={},
            )
            for i in range(2 * count)
        )
        ScalingDecision.objects.bulk_create(
            ScalingDecision(
                notification=notifications[i // 2],
                service_name=configs[i % 20].service_name,
                outcome=outcomes[i % len(outcomes)],
                reason="bench",
            )
            for i in range(4 * count)
        )
        created = now - timedelta(days=10)
        rows = ScaleOutEvent.objects.bulk_create(
            ScaleOutEvent(
                config=configs[i % 20],
                service_name=configs[i % 20].service_name,
                status=statuses[i % len(statuses)],
                trigger_attempts=1 + i % 3,
            )
            for i in range(count)
        )
        ScaleOutEvent.objects.filter(pk__in=[e.pk for e in rows]).update(
            created_at=created, triggered_at=created + timedelta(seconds=1.5)
        )
        EventAction.objects.bulk_create(
            EventAction(
                event=event,
                step=step,
                status="succeeded",
                started_at=created,
                finished_at=created + timedelta(seconds=5 * (n + 1)),
            )
            for event in rows
            for n, step in enumerate(steps)
        )
    ProvisioningRun.objects.bulk_create(
        ProvisioningRun(status="changed" if i % 5 == 0 else "unchanged", reloads=["prometheus"] if i % 5 == 0 else [])
        for i in range(2000)
    )


def measure(events):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from vmautoscale.metrics import render_metrics

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    fill(events)
    filled = time.perf_counter() - started
    render_metrics()  # warm
    samples = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        body = render_metrics()
        samples.append((time.perf_counter() - t0) * 1000)
    with CaptureQueriesContext(connection) as queries:
        render_metrics()
    print(
        f"  {connection.vendor:10s} {events:>6,} events ({events * 6:,} steps, {events * 2:,} notifications, "
        f"{events * 4:,} decisions, 2,000 passes; filled in {filled:.0f} s): scrape "
        f"{statistics.median(samples):.1f} ms median ({min(samples):.1f}-{max(samples):.1f}), "
        f"{len(queries.captured_queries)} queries, {len(body):,} bytes"
    )


def run_backend(url, events):
    env = {**os.environ, "DATABASE_URL": url, "LAB_ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "vmautoscale.settings"}
    result = subprocess.run(
        [sys.executable, __file__, "--inner", "--events", str(events)], cwd=ROOT, env=env, timeout=900
    )
    if result.returncode:
        raise SystemExit(result.returncode)


def psql(sql):
    subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--inner", action="store_true")
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.inner:
        measure(args.events)
        return
    sizes = [0, args.events // 10 if args.quick else args.events]
    print(f"/metrics scrape cost ({REPEAT} scrapes each, in-process rendering)")
    with tempfile.TemporaryDirectory() as tmp:
        for n, events in enumerate(sizes):
            run_backend(f"sqlite:///{Path(tmp) / f'bench{n}.sqlite3'}", events)
    for events in sizes:
        psql(f"DROP DATABASE IF EXISTS {PG_DB}")
        psql(f"CREATE DATABASE {PG_DB}")
        try:
            run_backend(f"postgres://postgres@127.0.0.1:5432/{PG_DB}", events)
        finally:
            psql(f"DROP DATABASE IF EXISTS {PG_DB}")


if __name__ == "__main__":
    main()
