"""Benchmark of the scale-out pipeline (issue 6): the time of each stage of one scale-out.

    .venv/bin/python benchmarks/bench_pipeline.py [--runs 5]

Starts its own lab (vCenter simulator, Jenkins stand-in running jenkins/Jenkinsfile.autoscale, F5 stand-in) and the
portal (gunicorn, SQLite in a temp dir) on loopback ports, then runs scale-outs through the portal's trigger. For
each stage it reports the median (min-max) of:
- the Jenkins stage time (the stand-in's console: the step command, which makes its own two reports), and
- the step time the portal recorded from the pipeline's callbacks (EventAction start -> finish),
plus the whole build and the event's created -> finished time. The F5 stand-in reports a new member up after
0.5 s (its `up_delay`), which the health-check stage waits for.
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import Lab, free_port  # noqa: E402

STAGE_LINE = re.compile(r"\[Pipeline\] stage '([^']+)' (\w+) in ([\d.]+) s")


def fmt(values):
    values = sorted(values)
    return f"{statistics.median(values) * 1000:7.0f} ms ({values[0] * 1000:.0f}-{values[-1] * 1000:.0f})"


@contextlib.contextmanager
def portal_and_lab(prefix):
    """Its own lab (vCenter simulator, Jenkins stand-in running the Jenkinsfile, F5 stand-in) and the portal
    (gunicorn, SQLite in a temp dir), with one service whose job is provisioned: yields (lab, control, config)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    lab = Lab(tmp / "lab")
    gunicorn = None
    try:
        for name in ("vcsim", "jenkins", "f5"):
            lab.ensure(name)
        port = free_port()
        portal_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **lab.env(),
            "LAB_ENV_FILE": "",
            "DATABASE_URL": f"sqlite:///{tmp / 'portal.sqlite3'}",
            "PORTAL_URL": portal_url,
            "SECRET_KEY": "bench-pipeline",
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "createcachetable"], env=env, check=True, cwd=ROOT)
        gunicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "vmautoscale.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
        )
        lab.wait_http("portal", f"{portal_url}/api/", pid=gunicorn.pid, timeout=60, accept=lambda s: s < 500)

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")
        django.setup()
        from autoscaling import rendering
        from autoscaling.models import AutoscalingConfig, IpPool
        from autoscaling.provisioning import inputs
        from common.clients import jenkins_client
        from integrations.vcenter import VcenterClient
        from lab.components.f5 import F5StandinControl
        from lab.components.jenkins import JenkinsStandinControl
        from lab.standins.pipeline_runner import lab_behaviour
        from templates_app.models import VMTemplate

        vcsim = lab.info("vcsim")
        with VcenterClient(
            vcsim["url"], vcsim["env"]["VCENTER_USER"], vcsim["env"]["VCENTER_PASSWORD"], verify_tls=False
        ) as vc:
            vc.clone_to_template(vc.find_vm("DC0_H0_VM0").moid, name="bench-template")
        f5 = F5StandinControl(lab.info("f5")["control_url"])
        f5.create_pool("bench_pool")
        control = JenkinsStandinControl(lab.info("jenkins")["control_url"])

        template = VMTemplate.objects.create(name="bench-template", status=VMTemplate.Status.READY)
        pool = IpPool.objects.create(
            name="bench",
            network="127.0.100.0/24",
            first_address="127.0.100.10",
            last_address="127.0.100.200",
            gateway="127.0.100.1",
            ping_check=False,
        )
        config = AutoscalingConfig.objects.create(
            service_name="bench",
            template=template,
            enabled=True,
            ip_pool=pool,
            cluster="DC0_C0",
            f5_pool="bench_pool",
            f5_member_port=80,
            max_instances=100,
        )
        job = config.jenkins_job_name
        jenkins_client().create_or_update_job(
            job, rendering.job_xml(inputs.service_spec(config), inputs.render_context())
        )
        control.set_build_behaviour(job=job, reset=True, **lab_behaviour(lab, env={"POLL_INTERVAL": "0.05"}))
        yield lab, control, config
    finally:
        try:
            if gunicorn is not None:
                gunicorn.terminate()
                try:
                    gunicorn.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    gunicorn.kill()
                    gunicorn.wait()
        finally:
            lab.stop()


def run_event(event, control):
    """Trigger the event as the portal does and wait for its build to end; the finished build."""
    from events.models import ScaleOutEvent
    from events.trigger import event_trigger

    event_trigger(event_id=event.pk)
    job = event.config.jenkins_job_name
    deadline = time.monotonic() + 120
    while True:
        event.refresh_from_db()
        if event.is_finished and not control.build(job, event.build_number)["building"]:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"event {event.pk} did not finish: {event.status}")
        time.sleep(0.05)
    if event.status != ScaleOutEvent.Status.SUCCEEDED:
        raise SystemExit(f"event {event.pk} {event.status}: {event.error}")
    return control.build(job, event.build_number)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with portal_and_lab("bench-pipeline-") as (_lab, control, config):
        from events.models import EventAction, ScaleOutEvent

        stage_times, step_times, builds, events = {}, {}, [], []
        for _run in range(args.runs):
            event = ScaleOutEvent.objects.create(config=config, service_name="bench")
            build = run_event(event, control)
            builds.append(build["duration_ms"] / 1000)
            events.append((event.finished_at - event.created_at).total_seconds())
            for title, _result, seconds in STAGE_LINE.findall(build["console"]):
                stage_times.setdefault(title, []).append(float(seconds))
            for action in EventAction.objects.filter(event=event).exclude(step=EventAction.Step.TRIGGER):
                step_times.setdefault(action.get_step_display(), []).append(action.duration_seconds)

        print(f"Pipeline benchmark: {args.runs} scale-outs of one VM (vCenter simulator, F5 stand-in up_delay 0.5 s)")
        print("\nJenkins stage (command with its reports), median (min-max):")
        for title, values in stage_times.items():
            print(f"  {title:22} {fmt(values)}")
        print("\nStep as the portal recorded it (callback start -> finish):")
        for title, values in step_times.items():
            print(f"  {title:22} {fmt(values)}")
        print(f"\n  {'whole build':22} {fmt(builds)}")
        print(f"  {'event created->done':22} {fmt(events)}")


if __name__ == "__main__":
    main()
