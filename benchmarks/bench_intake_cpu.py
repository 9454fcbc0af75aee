"""The webhook's own cost per notification, in-process, beside a bare one-row insert (issue 19).

    .venv/bin/python benchmarks/bench_intake_cpu.py [--notifications 300] [--database sqlite]

No HTTP server and no load generator: the Django test client posts each notification through the whole middleware
stack and view, so the figure is the portal's CPU and database time per notification, the part that code changes
move (bench_events.py measures the burst over gunicorn, where the machine's load moves the figures more). It
recreates the PostgreSQL database `vmas_bench_intake` (or a SQLite file in a temp dir), makes 100 services, and
measures, alternating, the webhook (each notification a new alert of a service whose first alert scaled out: a
decision "in cooldown" or "in progress", the burst's usual case; the answer, then the decider's share: each round's
notifications decided together, as the decider takes what waits) and the bare insert (parse the JSON, insert the
notification row), as the CPU time and wall time per notification; then prints the queries of one notification.
Loopback only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "vmas_bench_intake"
TOKEN = "bench-intake-token"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    if args.database == "postgresql":
        for sql in (f"DROP DATABASE IF EXISTS {DB_NAME}", f"CREATE DATABASE {DB_NAME}"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)
        url = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}?conn_max_age=300"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-intake-')}/db.sqlite3"
    os.environ.update(
        LAB_ENV_FILE="", DATABASE_URL=url, WEBHOOK_TOKEN=TOKEN, DJANGO_SETTINGS_MODULE="vmautoscale.settings",
        LOG_LEVEL="WARNING", ALLOWED_HOSTS="testserver", Q_BROKER="orm",
    )  # fmt: skip
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from autoscaling.models import AutoscalingConfig
    from events import intake
    from events.models import AlertNotification
    from lab.payloads import firing_notification
    from templates_app.models import VMTemplate

    call_command("migrate", verbosity=0)
    template = VMTemplate.objects.create(name="bench-template", status="ready")
    AutoscalingConfig.objects.bulk_create(
        AutoscalingConfig(service_name=f"svc-{n:03d}", template=template, enabled=True, max_instances=10,
                          cooldown_seconds=3600, monitored_instances=["127.0.0.1:9100"])
        for n in range(100)
    )  # fmt: skip
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

    def body(n, service):
        return json.dumps(firing_notification(service, fingerprint=f"{n:016x}"))

    def webhook(n):
        service = f"svc-{n % 100:03d}"
        response = client.post(f"/api/webhook/autoscale/{service}", body(n, service), "application/json", **headers)
        assert response.status_code == 202, response.content

    decided = timezone.now()

    def bare(n):
        service = f"svc-{n % 100:03d}"
        payload = json.loads(body(n, service))
        AlertNotification.objects.create(
            service_name=service,
            status=payload["status"],
            group_key=payload["groupKey"],
            payload=payload,
            decided_at=decided,  # not for the decider
        )

    for n in range(100):  # each service's first alert scales out: what follows is decided against its event
        webhook(n)
    intake.notifications_decide()
    figures = {"webhook": [], "bare": [], "decider": []}
    counter = 100
    for _round in range(args.rounds):
        for name, run in (("bare", bare), ("webhook", webhook)):
            wall, cpu = time.perf_counter(), time.process_time()
            for _n in range(args.notifications):
                run(counter)
                counter += 1
            per = 1000 / args.notifications
            figures[name].append(((time.perf_counter() - wall) * per, (time.process_time() - cpu) * per))
            if name == "webhook":
                wall, cpu = time.perf_counter(), time.process_time()
                assert intake.notifications_decide() == args.notifications
                figures["decider"].append(((time.perf_counter() - wall) * per, (time.process_time() - cpu) * per))
    with CaptureQueriesContext(connection) as queries:
        webhook(counter)
    print(f"{args.database}, {args.notifications} notifications x {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, runs in figures.items():
        wall = statistics.median(w for w, _c in runs)
        cpu = statistics.median(c for _w, c in runs)
        print(f"  {name:8s} {wall:6.2f} ms wall, {cpu:6.2f} ms CPU per notification (median of {len(runs)} rounds)")
    webhook_cpu = statistics.median(c for _w, c in figures["webhook"])
    bare_cpu = statistics.median(c for _w, c in figures["bare"])
    decider_cpu = statistics.median(c for _w, c in figures["decider"])
    print(
        f"  webhook / bare CPU: {webhook_cpu / bare_cpu:.2f} x; with the decider's share: "
        f"{(webhook_cpu + decider_cpu) / bare_cpu:.2f} x; statements per answer: {len(queries)}"
    )


if __name__ == "__main__":
    main()
