"""jenkins/Jenkinsfile.autoscale parses, uses only commands that exist, matches the portal's contract, and is what
the lab's Jenkins stand-in runs (the runner derives its stages from it, so they cannot drift apart)."""

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autoscaling import rendering
from events import callbacks, trigger
from events.models import EventAction
from lab.standins import pipeline_runner
from lab.standins.pipeline_runner import PipelineSyntaxError, job_script, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("autoscale_step", ROOT / "scripts" / "autoscale_step.py")
autoscale_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(autoscale_step)
JENKINSFILE = ROOT / "jenkins" / "Jenkinsfile.autoscale"
SOURCE = JENKINSFILE.read_text()
SCRIPT_REF = re.compile(r'"\$\{PORTAL_SCRIPTS_DIR:-scripts\}/([^"]+)"(?: ([a-z][a-z0-9-]*))?')


def groovy_env():
    groovy = shutil.which("groovy")
    java = shutil.which("java")
    if not groovy or not java:
        pytest.skip("Debian's groovy is not installed (scripts/install-system-deps.sh installs it)")
    env = dict(os.environ)
    if not Path(env.get("JAVA_HOME", "/usr/lib/jvm/default-java"), "bin", "java").exists():
        env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return groovy, env


def test_groovy_parses_the_jenkinsfile(tmp_path):
    groovy, env = groovy_env()
    check = "new GroovyShell().parse(new File(args[0])); println 'parsed'"
    result = subprocess.run(
        [groovy, "-e", check, str(JENKINSFILE)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "parsed" in result.stdout
    # And it would notice a broken file.
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(SOURCE.replace("stages {", "stages {{", 1))
    result = subprocess.run([groovy, "-e", check, str(broken)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_declarative_structure_and_every_command_exists():
    pipeline = parse_pipeline(SOURCE)
    used = set()
    for _title, script in pipeline.commands() + [
        ("post", sh.script) for steps in pipeline.post.values() for sh in pipeline_runner._walk(steps)
    ]:
        for path, subcommand in SCRIPT_REF.findall(script):
            assert (ROOT / "scripts" / path).is_file(), path
            if path == "autoscale_step.py":
                assert subcommand in [*autoscale_step.STEPS, "status-body", "check"], subcommand
            used.add(path)
    assert used == {"get-available-ip.py", "autoscale_step.py"}
    assert set(pipeline.post) == {"unsuccessful"}


def test_stages_report_the_portals_steps_in_order():
    pipeline = parse_pipeline(SOURCE)
    reported = []
    for stage in pipeline.stages:
        steps = re.findall(r'"step": "([a-z0-9_]+)", "status": "running"', "\n".join(s for _t, s in _commands(stage)))
        reported.extend(steps)
    undo = re.findall(
        r'"step": "([a-z0-9_]+)", "status": "running"',
        "\n".join(sh.script for sh in pipeline_runner._walk(pipeline.post["unsuccessful"])),
    )
    Step = EventAction.Step
    assert reported == [
        Step.IP_ALLOCATE,
        Step.VM_CLONE,
        Step.VM_CUSTOMIZE,
        Step.VM_POWER_ON,
        Step.VM_GUEST_IP,
        Step.F5_ADD,
        Step.HEALTH_CHECK,
    ]
    assert undo == [Step.ROLLBACK_F5, Step.ROLLBACK_VM, Step.ROLLBACK_IP]
    assert set(reported + undo) <= set(callbacks.CALLBACK_STEPS)
    # Each step command reports the same step name as the stage announced.
    for stage in pipeline.stages[1:-1]:
        announced = re.search(r'"step": "([a-z0-9_]+)"', _commands(stage)[0][1]).group(1)
        command = _commands(stage)[1][1]
        sub = SCRIPT_REF.search(command).group(2)
        assert (autoscale_step.STEPS.get(sub) if sub else "ip_allocate") == announced


def _commands(stage):
    return [(stage.title, sh.script) for sh in pipeline_runner._walk(stage.steps)]


def test_parameters_match_the_job_template_and_the_trigger(make_event):
    declared = parse_pipeline(SOURCE).parameters
    assert declared == rendering.PARAMETER_NAMES
    event, _token = make_event()
    sent = trigger.event_jenkins_parameters(event=event, token="t")
    assert sorted(sent) == sorted(declared)
    assert sent["CALLBACK_URL"].endswith(f"/api/events/{event.pk}/callback")


def test_runner_stages_are_the_jenkinsfiles_and_run_from_the_job():
    """Drift check: the stand-in's stage list and commands are exactly the file's (read independently here)."""
    pipeline = parse_pipeline(SOURCE)
    titles = re.findall(r"^\s*stage\('([^']+)'\)", SOURCE, re.M)
    assert [stage.title for stage in pipeline.stages] == titles
    parsed_sh = (
        len(pipeline.commands())
        + sum(len(list(pipeline_runner._walk(steps))) for stage in pipeline.stages for steps in stage.post.values())
        + sum(len(list(pipeline_runner._walk(steps))) for steps in pipeline.post.values())
    )
    assert parsed_sh == len(re.findall(r"^\s*sh '", SOURCE, re.M))
    credentials = re.findall(r"credentialsId: '([^']+)'", SOURCE)
    assert set(credentials) == {"vmautoscale-vcenter", "vmautoscale-f5"}
    # The job the portal provisions embeds the file; the runner runs what the job holds.
    from autoscaling.rendering import RenderContext

    context = RenderContext("http://127.0.0.1:8000", "t", "p", "r", "d", jenkinsfile=SOURCE)
    spec = rendering.ServiceSpec(service_name="web", enabled=True, metric="cpu", threshold=80, duration_seconds=60)
    assert job_script(rendering.job_xml(spec, context)) == SOURCE


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("""sh 'rm -f "$PIPELINE_STATE" "$STEP_RESULT"'""", "script { env.X = 1 }"),
        ("""sh 'rm -f "$PIPELINE_STATE" "$STEP_RESULT"'""", 'sh "rm -f ${env.PIPELINE_STATE}"'),
        ("post {\n        unsuccessful {", "post {\n        fixed {"),
        ("    environment {", "    tools {"),
    ],
)
def test_runner_refuses_what_it_would_not_run_faithfully(old, new):
    """Anything the stand-in could only guess at fails the parse (and so a test), instead of running differently."""
    assert old in SOURCE
    with pytest.raises(PipelineSyntaxError):
        parse_pipeline(SOURCE.replace(old, new, 1))
