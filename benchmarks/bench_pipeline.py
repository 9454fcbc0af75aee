"""Benchmark of the scale-out pipeline (issues 6 and 19): one scale-out's stages, and the portal's own cost.

    .venv/bin/python benchmarks/bench_pipeline.py [--runs 5] [--baseline cd86d83]

Starts its own lab (vCenter simulator, Jenkins stand-in running jenkins/Jenkinsfile.autoscale, F5 stand-in) and the
portal (gunicorn, SQLite in a temp dir) on loopback ports, then runs scale-outs of one VM through the portal's
trigger. For each build it reports the median (min-max) of:
- the whole build (the Jenkins stand-in's duration) and the time its commands spent inside vCenter and F5 calls,
  their waits included (benchmarks/pipeline_timing/sitecustomize.py times every call of the two clients, in every
  command, through a PORTAL_PYTHON wrapper; the F5 stand-in reports a new member up 0.5 s after it was added, its
  `up_delay`, which the health check waits for);
- the portal's own cost: the whole build minus those calls (Python starting, imports, the step reports and the
  portal answering them, the state file, the Jenkins stand-in starting each `sh`);
- each Jenkins stage (from the console) and each step as the portal recorded it from the callbacks.
With --baseline REV, that commit's pipeline (`git archive REV` into a temp dir: its Jenkinsfile embedded in a second
service's job, its checkout that job's PORTAL_HOME) runs too, alternately with this checkout's, against the same lab
and the same portal (this checkout's server). Both checkouts' pipeline/ and integrations/ are compiled to bytecode
first, as an agent's checkout keeps its __pycache__ after the first build (this machine's environment sets
PYTHONDONTWRITEBYTECODE, so no command would write it).
"""

import argparse
import contextlib
import dataclasses
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
TIMING_HOOK = ROOT / "benchmarks" / "pipeline_timing"


def fmt(values):
    values = sorted(values)
    return f"{statistics.median(values) * 1000:7.0f} ms ({values[0] * 1000:.0f}-{values[-1] * 1000:.0f})"


@contextlib.contextmanager
def portal_and_lab(prefix, **service):
    """Its own lab (vCenter simulator, Jenkins stand-in running the Jenkinsfile, F5 stand-in) and the portal
    (gunicorn, SQLite in a temp dir), with one service whose job is provisioned (`service`: add_service's options):
    yields (lab, control, config)."""
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
        from integrations.vcenter import VcenterClient
        from lab.components.jenkins import JenkinsStandinControl

        vcsim = lab.info("vcsim")
        with VcenterClient(
            vcsim["url"], vcsim["env"]["VCENTER_USER"], vcsim["env"]["VCENTER_PASSWORD"], verify_tls=False
        ) as vc:
            vc.clone_to_template(vc.find_vm("DC0_H0_VM0").moid, name="bench-template")
        control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
        config = add_service(lab, control, "bench", network="127.0.100", **service)
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


def add_service(lab, control, name, *, network, jenkinsfile=None, env=None, portal_home=None, python=None):
    """A service (template bench-template, its own IP pool and F5 pool) whose job is provisioned, with
    `jenkinsfile` (default this checkout's) embedded, and whose builds run in the lab: its AutoscalingConfig."""
    from autoscaling import rendering
    from autoscaling.models import AutoscalingConfig, IpPool
    from autoscaling.provisioning import inputs
    from common.clients import jenkins_client
    from lab.components.f5 import F5StandinControl
    from lab.standins.pipeline_runner import lab_behaviour
    from templates_app.models import VMTemplate

    F5StandinControl(lab.info("f5")["control_url"]).create_pool(f"{name}_pool")
    template, _created = VMTemplate.objects.get_or_create(
        name="bench-template", defaults={"status": VMTemplate.Status.READY}
    )
    pool = IpPool.objects.create(
        name=name,
        network=f"{network}.0/24",
        first_address=f"{network}.10",
        last_address=f"{network}.200",
        gateway=f"{network}.1",
        ping_check=False,
    )
    config = AutoscalingConfig.objects.create(
        service_name=name,
        template=template,
        enabled=True,
        ip_pool=pool,
        cluster="DC0_C0",
        f5_pool=f"{name}_pool",
        f5_member_port=80,
        max_instances=100,
    )
    context = inputs.render_context()
    if jenkinsfile is not None:
        context = dataclasses.replace(context, jenkinsfile=jenkinsfile)
    job = config.jenkins_job_name
    jenkins_client().create_or_update_job(job, rendering.job_xml(inputs.service_spec(config), context))
    behaviour = lab_behaviour(lab, portal_home=portal_home, python=python, env={"POLL_INTERVAL": "0.05", **(env or {})})
    control.set_build_behaviour(job=job, reset=True, **behaviour)
    return config


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


def timed_python(directory):
    """A PORTAL_PYTHON that runs this Python with the timing hook on its path (the Jenkinsfile sets PYTHONPATH)."""
    wrapper = Path(directory) / "python-timed"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{TIMING_HOOK}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def baseline_checkout(rev, directory):
    """`git archive REV` of this repository, unpacked in `directory`."""
    Path(directory).mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return Path(directory)


def precompile(checkout):
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "pipeline", "integrations"], cwd=checkout, check=True
    )


def read_timings(path):
    """The seconds the commands that appended to `path` spent in vCenter calls, F5 calls, portal requests and alive
    (from the timing hook's start to their exit), and how many they were."""
    totals = {"vcenter": 0.0, "f5": 0.0, "portal": 0.0, "alive": 0.0, "processes": 0}
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        _pid, *seconds = line.split(" ")[:5]
        for key, value in zip(("vcenter", "f5", "portal", "alive"), seconds, strict=True):
            totals[key] += float(value)
        totals["processes"] += 1
    return totals


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class Variant:
    """The figures of the builds of one checkout."""

    def __init__(self, label, config):
        self.label = label
        self.config = config
        self.stages, self.steps, self.figures = {}, {}, {}

    def run(self, control, timings):
        from events.models import EventAction, ScaleOutEvent

        Path(timings).unlink(missing_ok=True)
        event = ScaleOutEvent.objects.create(config=self.config, service_name=self.config.service_name)
        build = run_event(event, control)
        whole = build["duration_ms"] / 1000
        spent = read_timings(timings)
        figures = {
            "build": whole,
            "vcenter": spent["vcenter"],
            "f5": spent["f5"],
            "portal_cost": whole - spent["vcenter"] - spent["f5"],
            "portal_requests": spent["portal"],
            "in_processes": spent["alive"] - spent["vcenter"] - spent["f5"] - spent["portal"],
            "outside": whole - spent["alive"],
            "processes": spent["processes"],
        }
        for key, value in figures.items():
            self.figures.setdefault(key, []).append(value)
        for title, _result, seconds in STAGE_LINE.findall(build["console"]):
            self.stages.setdefault(title, []).append(float(seconds))
        for action in EventAction.objects.filter(event=event).exclude(step=EventAction.Step.TRIGGER):
            self.steps.setdefault(action.step, []).append(action.duration_seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="a commit to compare with (its pipeline runs alternately with this one)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-pipeline-code-"))
    timings = scratch / "timings.txt"
    os.environ["PIPELINE_BENCH_TIMINGS"] = str(timings)  # the lab's Jenkins stand-in passes it to every command
    python = timed_python(scratch)
    base_home = baseline_checkout(args.baseline, scratch / "baseline") if args.baseline else None
    for checkout in filter(None, (ROOT, base_home)):
        precompile(checkout)
    print(f"load average before: {load()}", flush=True)

    with portal_and_lab("bench-pipeline-", python=python) as (lab, control, config):
        variants = [Variant("this checkout", config)]
        if base_home is not None:
            base = add_service(
                lab,
                control,
                "benchbase",
                network="127.0.101",
                jenkinsfile=(base_home / "jenkins" / "Jenkinsfile.autoscale").read_text(),
                portal_home=base_home,
                python=python,
            )
            variants.insert(0, Variant(f"baseline {args.baseline}", base))
        for run in range(args.runs):
            # Alternately: each checkout goes first in every other run.
            for variant in variants if run % 2 == 0 else variants[::-1]:
                variant.run(control, timings)

        from events.models import EventAction

        print(
            f"\nPipeline benchmark: {args.runs} scale-outs of one VM per checkout (vCenter simulator, F5 stand-in "
            f"up_delay 0.5 s, POLL_INTERVAL 0.05 s), median (min-max); load average after: {load()}"
        )
        width = 24
        print("\n" + " " * 26 + "".join(f"{v.label:>{width}}" for v in variants))
        rows = [
            ("whole build", "build"),
            ("in vCenter calls", "vcenter"),
            ("in F5 calls and waits", "f5"),
            ("PORTAL'S OWN COST", "portal_cost"),
            ("  in portal requests", "portal_requests"),
            ("  else in the commands", "in_processes"),
            ("  outside the commands", "outside"),
        ]
        for title, key in rows:
            print(f"  {title:24}" + "".join(f"{fmt(v.figures[key]):>{width}}" for v in variants))
        processes = "".join(f"{statistics.median(v.figures['processes']):>{width}g}" for v in variants)
        print(f"  {'Python processes':24}{processes}")
        print(
            "  (portal's own cost = whole build - vCenter - F5; split into the commands' requests to the portal, "
            "the rest of\n   their lifetime (imports, state file, ...), and outside them: Python's start before "
            "the hook, sh, the stand-in)"
        )
        for variant in variants:
            print(f"\nJenkins stages, {variant.label} (command with its reports):")
            for title, values in variant.stages.items():
                print(f"  {title:28} {fmt(values)}")
        print("\nSteps as the portal recorded them (callback running -> result):")
        labels = dict(EventAction.Step.choices)
        steps = list(dict.fromkeys(step for v in variants for step in v.steps))
        for step in steps:
            cells = "".join(f"{fmt(v.steps[step]) if step in v.steps else '-':>{width}}" for v in variants)
            print(f"  {str(labels.get(step, step)):24}{cells}")


if __name__ == "__main__":
    main()
