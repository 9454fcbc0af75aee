"""Benchmarks of the monitoring dashboard (issue 7), against the lab's real Prometheus and Alertmanager.

    .venv/bin/python benchmarks/bench_dashboard.py      # ~30 s, loopback only

Starts its own lab (metrics stand-in, Alertmanager, Prometheus) in a temp dir and a SQLite database in the same
dir, simulates SERVICES services of 2 VMs each scraped every second, then measures in-process (Django test client):
1. one SVG chart of 240 points;
2. the dashboard body (the fragment the page refreshes) for 1 and for all services, 1h and 7d ranges;
3. GET /api/monitoring/services/<service>/metrics and GET /api/monitoring/alerts;
4. the dashboard body while Prometheus and Alertmanager cannot be reached (closed loopback ports).
"""

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import Lab  # noqa: E402

SERVICES = 10
REPEAT = 10


def timed(fn, repeat=REPEAT):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def report(what, figures):
    median, low, high = figures
    print(f"{what:70} {median:8.1f} ms median ({low:.1f}-{high:.1f})")


def main():
    run_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    lab = Lab(run_dir / "lab")
    try:
        started = time.perf_counter()
        lab.up(["metrics", "alertmanager", "prometheus"])
        print(f"lab start: {(time.perf_counter() - started) * 1000:.0f} ms")
        os.environ.update(
            LAB_ENV_FILE=str(lab.env_file),
            DATABASE_URL=f"sqlite:///{run_dir / 'db.sqlite3'}",
            DJANGO_SETTINGS_MODULE="vmautoscale.settings",
            LOG_LEVEL="WARNING",
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import override_settings, setup_test_environment

        from autoscaling.models import AutoscalingConfig
        from dashboard.charts import line_chart_svg
        from events.models import ScaleOutEvent
        from lab.core import free_port
        from templates_app.models import VMTemplate
        from tests.browser.support import scraped_service

        setup_test_environment()
        call_command("migrate", verbosity=0)
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
        template = VMTemplate.objects.create(name="bench-template", status="ready")
        started = time.perf_counter()

        def scrape(i):
            return scraped_service(lab, f"bench-{i:02d}", cpu_percent=30 + 5 * i, memory_percent=40)

        # The first adds the scrape job to prometheus.yml (one reload); the others only add target files.
        infos = [scrape(0)]
        with ThreadPoolExecutor(8) as pool:
            infos += list(pool.map(scrape, range(1, SERVICES)))
        names = []
        for info in infos:
            config = AutoscalingConfig.objects.create(
                service_name=info["service"],
                template=template,
                enabled=True,
                threshold=80,
                monitored_instances=info["targets"],
            )
            for status in ("succeeded", "failed", "running"):
                ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status=status)
            names.append(config.service_name)
        print(f"{SERVICES} services x 2 VMs scraped with data: {(time.perf_counter() - started) * 1000:.0f} ms")

        points = [(i * 15.0, 50 + 30 * ((i % 20) / 20)) for i in range(240)]
        report(
            "1. SVG chart, 240 points",
            timed(lambda: line_chart_svg(points=points, start=0, end=3600, step=15, title="cpu", threshold=80), 200),
        )

        client = Client()
        client.force_login(user)

        def get(url, status=200):
            response = client.get(url)
            assert response.status_code == status, (url, response.status_code)
            return response

        one = f"/admin/monitoring/services/{names[0]}/fragment"
        report("2. dashboard body, 1 service, 1h (2 range queries, up, alerts)", timed(lambda: get(one + "?range=1h")))
        report("   dashboard body, 1 service, 7d", timed(lambda: get(one + "?range=7d")))
        report(
            f"   dashboard body, {SERVICES} services, 1h ({2 * SERVICES} range queries)",
            timed(lambda: get("/admin/monitoring/fragment?range=1h")),
        )
        report("   full dashboard page, all services, 1h", timed(lambda: get("/admin/monitoring/?range=1h")))
        report(
            "3. GET /api/monitoring/services/<service>/metrics?range=1h",
            timed(lambda: get(f"/api/monitoring/services/{names[0]}/metrics?range=1h")),
        )
        report("   GET /api/monitoring/alerts", timed(lambda: get("/api/monitoring/alerts")))
        down = {
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            "ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
        }
        with override_settings(**down):
            report(
                f"4. dashboard body, {SERVICES} services, Prometheus + Alertmanager down",
                timed(lambda: get("/admin/monitoring/fragment")),
            )
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
