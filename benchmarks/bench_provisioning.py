"""Benchmark of the provisioning pass on the lab's real programs (loopback only, ~1 min).

500 enabled services reconciled from scratch (rule file, 500 file_sd target files, alertmanager.yml, 500 Jenkins
jobs on the stand-in): time, reloads, SSH round trips and Jenkins requests; then passes with no change (goal:
under 1 s, zero reloads, no write); then one config changed; then all deleted again. Uses its own lab and a
throw-away SQLite database.

Run: .venv/bin/python benchmarks/bench_provisioning.py [--services 500] [--baseline CHECKOUT]
(--baseline: first run this benchmark of another checkout, e.g. the previous code, in the same run.)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import Lab  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--baseline", help="a checkout of the code to compare with: its benchmark runs first")
    args = parser.parse_args()
    if args.baseline:
        other = Path(args.baseline).resolve()
        print(f"--- baseline: {other} (load average {_load()})", flush=True)
        subprocess.run(
            [sys.executable, str(other / "benchmarks" / "bench_provisioning.py"), "--services", str(args.services)],
            cwd=other,
            check=False,
        )
        print(f"--- this checkout: {ROOT} (load average {_load()})", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-provisioning-") as run_dir:
        lab = Lab(Path(run_dir) / "lab")
        try:
            started = time.monotonic()
            for name in ("prometheus", "sshd", "jenkins"):
                lab.ensure(name)
            print(f"lab up in {time.monotonic() - started:.1f}s")
            os.environ.update(lab.env())
            os.environ["DATABASE_URL"] = f"sqlite:///{run_dir}/bench.sqlite3"
            os.environ["LAB_ENV_FILE"] = ""
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")
            import django

            django.setup()
            run(args.services)
        finally:
            lab.stop()
    print(f"load average at the end: {_load()}")


def _load():
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def run(count):
    from django.core.management import call_command

    from autoscaling import services
    from autoscaling.models import AutoscalingConfig
    from templates_app.models import VMTemplate

    call_command("migrate", verbosity=0)
    template = VMTemplate.objects.create(name="bench-template", status=VMTemplate.Status.READY)
    AutoscalingConfig.objects.bulk_create(
        AutoscalingConfig(
            service_name=f"bench-{n:04d}",
            template=template,
            enabled=True,
            metric="cpu" if n % 2 else "memory",
            threshold=70 + n % 25,
            duration_seconds=60,
            max_instances=4,
            f5_pool=f"bench-{n:04d}-pool",
            monitored_instances=[f"127.0.{n // 250}.{n % 250 + 1}:9100"],
        )
        for n in range(count)
    )

    from lab.components.jenkins import JenkinsStandinControl

    control = JenkinsStandinControl(os.environ["JENKINS_URL"])

    def timed(label, **kwargs):
        control.reset()
        started = time.monotonic()
        result = services.provisioning_run(reason=label, **kwargs)
        elapsed = time.monotonic() - started
        jenkins_requests = len(control.calls())
        actions = sorted({c["action"] for c in result.jenkins_changes})
        print(
            f"{label:<40} {elapsed:6.2f} s  status={result.status:<9} files={len(result.changed_files):<4} "
            f"jobs={len(result.jenkins_changes):<4}{'(' + ','.join(actions) + ')' if actions else ''} "
            f"reloads={result.reloads or 'none'} ssh_round_trips={result.ssh_round_trips} "
            f"jenkins_requests={jenkins_requests}"
        )
        if result.error:
            print("  error:", result.error[:500])
        return result, elapsed

    print(f"{count} enabled services")
    timed("from scratch")
    _run, no_change = timed("no change (after a save, incremental)", full_check=False)
    _run, no_change_full = timed("no change (periodic, reads every job)")
    timed("check only (no change)", check_only=True)
    config = AutoscalingConfig.objects.order_by("id").first()
    services.config_update(config=config, data={"threshold": 42})
    timed("one threshold changed (incremental)", full_check=False)
    synced = AutoscalingConfig.objects.filter(sync_state="synced").count()
    print(f"configs in sync: {synced}/{count}")
    # The inventory first: a config's instances protect it (the changed config adopted its monitored instance).
    AutoscalingConfig._meta.get_field("instances").related_model.objects.all().delete()
    AutoscalingConfig.objects.all().delete()
    timed("all deleted")
    for label, value in (("incremental", no_change), ("full", no_change_full)):
        print(f"no-change pass goal (< 1 s), {label}: {'met' if value < 1 else 'MISSED'} ({value:.2f} s)")


if __name__ == "__main__":
    main()
