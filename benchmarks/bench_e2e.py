"""Benchmark of the whole loop (issue 8): from a metric crossing the threshold to the scale-out event succeeding.

    .venv/bin/python benchmarks/bench_e2e.py [--runs 3]

Starts its own lab (real Prometheus with 1 s scrape and evaluation, real Alertmanager, sshd, the vCenter simulator,
the Jenkins stand-in running jenkins/Jenkinsfile.autoscale, the F5 stand-in, the metrics stand-in), the portal
(gunicorn, SQLite in a temp dir) and its task cluster (`manage.py qcluster`), seeds one service per run with
demo/services.py (two VMs, CPU above 70 % for 2 s, rate window 5 s) and provisions them in one pass. Each run
raises one service's load from 5 % to 85 % per VM. The metric crosses the threshold when Prometheus first
evaluates the alert expression as true (the alert's `activeAt`; with a 5 s rate window that is ~4 s after the load
jumped, reported apart). From there to the event succeeding, split into:
- alert detection: crossing -> the portal stored Alertmanager's notification (`for: 2s`, the next evaluation,
  Alertmanager's group_wait 1 s);
- the portal: notification stored -> event created (decision) -> Jenkins build requested (the task cluster's
  trigger, polling every 0.2 s);
- the pipeline: build requested -> event succeeded (every stage of the Jenkinsfile with its callbacks).
Runs are one after the other, each on a service of its own (a new alert group, as a first alert is).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import COMPONENTS, Lab, free_port  # noqa: E402
from lab.standins.metrics import random_loopback_network  # noqa: E402

# Prometheus forgets its Alertmanagers for up to ~5 s after a reload (facts.md): start measuring after that.
AFTER_RELOAD = 6.0


def fmt(values):
    values = sorted(values)
    return f"{statistics.median(values) * 1000:6.0f} ms ({values[0] * 1000:.0f}-{values[-1] * 1000:.0f})"


def wait(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def _active_at(lab, service):
    """When Prometheus first evaluated the service's alert expression as true: the metric crossing the threshold."""
    url = lab.info("prometheus")["url"] + "/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=10) as response:
        alerts = json.loads(response.read())["data"]["alerts"]
    (alert,) = [a for a in alerts if a["labels"].get("service") == service]
    return datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    lab = Lab(tmp / "lab")
    processes = []
    try:
        lab.up(COMPONENTS)
        port = free_port()
        portal_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **lab.env(),
            "LAB_ENV_FILE": "",
            "DATABASE_URL": f"sqlite:///{tmp / 'portal.sqlite3'}",
            "PORTAL_URL": portal_url,
            "SECRET_KEY": "bench-e2e",
            "WEBHOOK_TOKEN": "bench-e2e-webhook-token",
            "LOG_LEVEL": "WARNING",
            "Q_WORKERS": "2",
        }
        os.environ.update(env)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "createcachetable"], env=env, check=True, cwd=ROOT)
        gunicorn = [sys.executable, "-m", "gunicorn", "vmautoscale.wsgi", "-b", f"127.0.0.1:{port}"]
        gunicorn += ["-w", "2", "--threads", "4", "--log-level", "warning"]
        processes.append(subprocess.Popen(gunicorn, env=env, cwd=ROOT))
        processes.append(
            subprocess.Popen(
                [*manage, "qcluster"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        lab.wait_http("portal", f"{portal_url}/api/schema/", pid=processes[0].pid, timeout=30)

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")
        django.setup()
        from autoscaling import services as autoscaling_services
        from demo import services as demo
        from demo import wiring
        from events.models import AlertNotification, ScaleOutEvent

        network = random_loopback_network(prefixlen=16)
        subnets = network.subnets(new_prefix=24)
        plans = []
        for n in range(args.runs):
            plan = demo.DemoPlan(service=f"bench-e2e-{n + 1}", network=str(next(subnets)), cooldown_seconds=300)
            demo.demo_seed(lab=lab, plan=plan, start_vm_agent=False, provision=False)
            plans.append(plan)
        run = autoscaling_services.provisioning_run(reason="bench", wait=120)
        if run.status not in ("changed", "unchanged"):
            raise SystemExit(f"provisioning failed: {run.error}")
        reloaded = time.monotonic()
        metrics = wiring.lab_metrics(lab)

        rows = {"window": [], "detection": [], "decision": [], "trigger": [], "portal": [], "pipeline": [], "total": []}
        for plan in plans:
            time.sleep(max(0.0, AFTER_RELOAD - (time.monotonic() - reloaded)))
            t0 = time.time()
            metrics.set_load(plan.service, cpu_percent=170)
            event = wait(
                f"{plan.service}'s event to finish",
                lambda plan=plan: ScaleOutEvent.objects.filter(
                    service_name=plan.service, status__in=ScaleOutEvent.FINAL_STATUSES
                ).first(),
                timeout=90,
            )
            crossed = _active_at(lab, plan.service)
            metrics.set_load(plan.service, cpu_percent=5)
            if event.status != ScaleOutEvent.Status.SUCCEEDED:
                raise SystemExit(f"{plan.service}: event {event.status}: {event.error}")
            notified = (
                AlertNotification.objects.filter(service_name=plan.service, status="firing")
                .order_by("received_at")
                .first()
                .received_at.timestamp()
            )
            created, triggered = event.created_at.timestamp(), event.triggered_at.timestamp()
            finished = event.finished_at.timestamp()
            rows["window"].append(crossed - t0)
            rows["detection"].append(notified - crossed)
            rows["decision"].append(created - notified)
            rows["trigger"].append(triggered - created)
            rows["portal"].append(triggered - notified)
            rows["pipeline"].append(finished - triggered)
            rows["total"].append(finished - crossed)
            reloaded = time.monotonic() - AFTER_RELOAD  # no reload since: the next run may start at once

        print(f"End-to-end benchmark: {args.runs} scale-outs, one new service each (scrape/eval 1 s, for: 2s)")
        print("median (min-max):")
        labels = {
            "window": "(load raised -> metric above threshold)",
            "detection": "alert detection (crossing -> webhook stored)",
            "decision": "portal: notification -> event created",
            "trigger": "portal: event -> Jenkins build requested",
            "portal": "portal share (notification -> build)",
            "pipeline": "pipeline (build requested -> succeeded)",
            "total": "TOTAL metric crossing -> event succeeded",
        }
        for key, label in labels.items():
            print(f"  {label:44} {fmt(rows[key])}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        lab.stop()


if __name__ == "__main__":
    main()
