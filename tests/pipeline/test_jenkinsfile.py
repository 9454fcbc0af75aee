"""jenkins/Jenkinsfile.autoscale parses, uses only commands that exist, matches the portal's Jenkins contract, and is
what the lab's Jenkins stand-in runs (the runner derives its stages from it, so they cannot drift apart)."""

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from autoscaling import rendering
from events import callbacks, trigger
from lab.standins import pipeline_runner
from lab.standins.pipeline_runner import PipelineSyntaxError, job_script, parse_pipeline
from pipeline import cli, contract, scale_in, steps
from tests.pipeline.conftest import FORWARD, SCALE_IN, SCALE_IN_UNDO, UNDO

ROOT = Path(__file__).resolve().parents[2]
JENKINSFILE = ROOT / "jenkins" / "Jenkinsfile.autoscale"
SOURCE = JENKINSFILE.read_text()
# Every step of the file runs a command of the pipeline package this way (docs/pipeline.md: what an agent needs).
COMMAND = re.compile(r'^PYTHONPATH="\$\{PORTAL_HOME:-\.\}" "\$\{PORTAL_PYTHON:-python3\}" -m pipeline (.+)$')
# The Start stage's one command: `start` (exit status 3 when it failed and reported why), curl only when it could
# not run at all.
START = """PYTHONPATH="${PORTAL_HOME:-.}" "${PORTAL_PYTHON:-python3}" -m pipeline start || code=$?"""


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


def _scripts(steps_):
    return [sh.script for sh in pipeline_runner._walk(steps_)]


def _command(script):
    """The arguments of `python -m pipeline ...` in a step's script, checked by the package's own parser."""
    match = COMMAND.match(script)
    assert match, f"not one pipeline command: {script!r}"
    argv = match.group(1).split()
    cli.parse_args(argv)  # exits (fails the test) on a command or step the package does not have
    return argv


def test_declarative_structure_and_every_command_exists():
    pipeline = parse_pipeline(SOURCE)
    assert set(pipeline.post) == {"unsuccessful"}
    assert pipeline.environment == {"PIPELINE_STATE": "autoscale-state.json"}
    start = _scripts(pipeline.stages[0].steps)
    # The one report not made by the package: when the agent cannot run it, curl says so.
    assert len(start) == 1 and START in start[0] and "curl" in start[0] and "PORTAL_HOME" in start[0]
    assert '[ "$code" -ne 0 ] && [ "$code" -ne 3 ]' in start[0] and cli.START_FAILED == 3
    assert _command(START.removesuffix(" || code=$?")) == ["start"]
    for stage in pipeline.stages[1:]:
        assert len(_scripts(stage.steps)) == 1, stage.title  # one command per stage
        _command(_scripts(stage.steps)[0])
    assert [_command(s) for s in _scripts(pipeline.post["unsuccessful"])] == [["undo"]]
    every = [s for stage in pipeline.stages for s in _scripts(stage.steps)] + _scripts(pipeline.post["unsuccessful"])
    assert sum(script.count("curl ") for script in every) == 1


def test_token_is_never_on_a_command_line():
    """The callback token reaches the portal from the environment (Python) or curl's stdin, never as an argument."""
    pipeline = parse_pipeline(SOURCE)
    every = [s for stage in pipeline.stages for s in _scripts(stage.steps)] + _scripts(pipeline.post["unsuccessful"])
    assert sum(script.count("CALLBACK_TOKEN") for script in every) == 1  # the agent-check report
    for script in every:
        # Only as the argument of printf, a shell builtin (no process of its own), piped to curl's header option.
        piped = re.compile(r"""printf 'Authorization: Bearer %s\\n' "\$CALLBACK_TOKEN"\s*\| curl [^|;]* -H @- """)
        assert script.count("CALLBACK_TOKEN") == len(piped.findall(script)), script
    assert "-H @-" in SOURCE
    assert "--token" not in SOURCE and "Bearer $CALLBACK_TOKEN" not in SOURCE


def _stages_for(pipeline, action):
    return [stage for stage in pipeline.stages if stage.runs({"ACTION": action})]


def test_stages_run_the_portals_steps_in_order():
    pipeline = parse_pipeline(SOURCE)
    for action, forward in (("scale_out", FORWARD), ("scale_in", SCALE_IN)):
        stages = _stages_for(pipeline, action)
        assert stages[0].title == "Start" and stages[0].when is None
        commands = [_command(s) for stage in stages[1:] for s in _scripts(stage.steps)]
        assert all(argv[0] == "step" for argv in commands)
        # One command per stage, several steps each: together every step of the action, in order, once.
        assert [name for argv in commands for name in argv[1:] if name != "--finish"] == forward, action
        # The last stage's command ends the build: it reports the event succeeded once its steps did.
        assert [argv[-1] == "--finish" for argv in commands] == [False] * (len(commands) - 1) + [True]
        assert cli.parse_args(commands[-1]).finish and not cli.parse_args(commands[0]).finish
    # Every other stage names its action, with the one `when` form the lab's runner evaluates.
    assert {stage.when for stage in pipeline.stages} == {None, ("ACTION", "scale_out"), ("ACTION", "scale_in")}
    assert _stages_for(pipeline, "") == [pipeline.stages[0]]  # `start` refuses that ACTION
    assert list(steps.FORWARD) == FORWARD and list(steps.UNDO) == UNDO  # `undo` runs these, in this order
    assert list(scale_in.FORWARD) == SCALE_IN and list(scale_in.UNDO) == SCALE_IN_UNDO
    assert cli.UNDO == {"scale_out": steps.UNDO, "scale_in": scale_in.UNDO}
    assert set(FORWARD + UNDO + SCALE_IN + SCALE_IN_UNDO) <= set(callbacks.CALLBACK_STEPS)
    # The credentials each stage binds are the ones its step needs, and the undo has both.
    vcenter, f5 = "vmautoscale-vcenter", "vmautoscale-f5"
    bound = {stage.title: {b[0] for s in stage.steps for b in getattr(s, "bindings", [])} for stage in pipeline.stages}
    assert bound == {
        "Start": set(),
        "Reserve IP": set(),
        "Create VM": {vcenter},
        "Add to F5 pool": {f5},
        "Drain and remove F5 member": {f5},
        "Destroy VM": {vcenter},
        "Release IP": set(),
    }
    assert {b[0] for b in pipeline.post["unsuccessful"][0].bindings} == {vcenter, f5}


def test_the_job_declares_exactly_the_parameters_the_trigger_sends(make_event):
    """One contract (pipeline/contract.py): the job the portal renders, the trigger, the step commands' environment
    and the Jenkinsfile all use its names."""
    event, _token = make_event()
    sent = trigger.event_jenkins_parameters(event=event, token="t")
    assert list(sent) == list(contract.PARAMETER_NAMES)
    assert sent["CALLBACK_URL"].endswith(f"/api/events/{event.pk}/callback") and sent["CALLBACK_TOKEN"] == "t"
    assert sent["EVENT_ID"] == str(event.pk) and sent["SERVICE_NAME"] == event.service_name
    from autoscaling.provisioning.inputs import render_context, service_spec

    xml = rendering.job_xml(service_spec(event.config), render_context())
    definitions = ET.fromstring(xml).find("./properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions")
    assert [d.findtext("name") for d in definitions] == list(sent)
    secret = [d.findtext("name") for d in definitions if d.tag.endswith("PasswordParameterDefinition")]
    assert secret == [p.name for p in contract.PARAMETERS if p.secret] == ["CALLBACK_TOKEN"]
    assert event.config.jenkins_job_name == service_spec(event.config).job_name == contract.job_name(event.service_name)
    # The Jenkinsfile declares none (a `parameters {}` would replace the job's) and uses only known variables.
    pipeline = parse_pipeline(SOURCE)
    used = set()
    scripts = [s for stage in pipeline.stages for s in _scripts(stage.steps)] + _scripts(pipeline.post["unsuccessful"])
    for script in scripts:
        used |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    assert used == {"PORTAL_HOME", "PORTAL_PYTHON", "CALLBACK_URL", "CALLBACK_TOKEN"}
    assert used <= {*contract.PARAMETER_NAMES, *contract.AGENT_VARIABLES}
    # And every variable the step commands read is a build parameter or a documented agent variable.
    read = set()
    for path in (ROOT / "pipeline").glob("*.py"):
        read |= set(re.findall(r"""\benv(?:iron)?(?:\.get)?\(\s*["']([A-Z][A-Z0-9_]*)["']""", path.read_text()))
        read |= set(re.findall(r"""os\.environ\[["']([A-Z][A-Z0-9_]*)["']\]""", path.read_text()))
    assert {"TEMPLATE_NAME", "VM_COUNT", "CALLBACK_TOKEN", "VCENTER_URL", "F5_MEMBER_PORT"} <= read
    assert read - {*contract.PARAMETER_NAMES, *contract.AGENT_VARIABLES} == set()
    docs = (ROOT / "docs" / "pipeline.md").read_text()
    assert [name for name in contract.AGENT_VARIABLES if f"`{name}`" not in docs] == []


def test_step_takes_several_steps_and_only_known_ones():
    assert cli.parse_args(["step", "vm_clone", "vm_customize"]).step == ["vm_clone", "vm_customize"]
    assert cli.parse_args(["step", "f5_add", "health_check", "--finish"]).finish
    for argv in (["step"], ["step", "vm_clone", "nope"], ["finish", "vm_clone"], ["start", "--finish"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(argv)
        assert exit_info.value.code == 2, argv


def test_build_parameters_wants_every_parameter_and_nothing_else():
    values = {p.key: "" for p in contract.PARAMETERS}
    assert contract.build_parameters(**values)["F5_PARTITION"] == "Common"  # empty -> the contract's default
    with pytest.raises(TypeError, match="missing \\['vm_count'\\]"):
        contract.build_parameters(**{k: v for k, v in values.items() if k != "vm_count"})
    with pytest.raises(TypeError, match="unknown \\['extra'\\]"):
        contract.build_parameters(**values, extra="x")


def test_runner_stages_are_the_jenkinsfiles_and_run_from_the_job():
    """Drift check: the stand-in's stage list and commands are exactly the file's (read independently here)."""
    pipeline = parse_pipeline(SOURCE)
    titles = re.findall(r"^\s*stage\('([^']+)'\)", SOURCE, re.M)
    assert [stage.title for stage in pipeline.stages] == titles
    parsed_sh = len(pipeline.commands()) + sum(len(_scripts(steps_)) for steps_ in pipeline.post.values())
    assert parsed_sh == len(re.findall(r"^\s*sh '", SOURCE, re.M))
    credentials = re.findall(r"credentialsId: '([^']+)'", SOURCE)
    assert set(credentials) == {"vmautoscale-vcenter", "vmautoscale-f5"}
    # The job the portal provisions embeds the file; the runner runs what the job holds.
    from autoscaling.rendering import RenderContext

    context = RenderContext("http://127.0.0.1:8000", "t", "p", "r", "d", jenkinsfile=SOURCE)
    spec = rendering.ServiceSpec(service_name="web", enabled=True, metric="cpu", threshold=80, duration_seconds=60)
    assert job_script(rendering.job_xml(spec, context)) == SOURCE


RUN = 'PYTHONPATH="${PORTAL_HOME:-.}" "${PORTAL_PYTHON:-python3}" -m pipeline'
FINISH = f"sh '{RUN} step ip_release monitoring_remove --finish'"  # the last stage's command
LAST_STAGE_END = "            }\n        }\n    }\n    post {"
STAGE_POST = (
    "            }\n            post {\n                always {\n"
    "                    sh 'true'\n                }\n            }"
)
PARAMETERS = "    parameters {\n        string(name: 'X', defaultValue: '')\n    }\n    environment {"
WHEN = "when { environment name: 'ACTION', value: 'scale_in' }"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (FINISH, "script { env.X = 1 }", "step 'script' is not supported"),
        (FINISH, 'sh "rm -f ${env.PIPELINE_STATE}"', "double-quoted strings"),
        (FINISH, "sh 'true'\n                echo 'done'", "step 'echo' is not supported"),
        (FINISH, "sh(script: 'true', returnStatus: true)", "sh needs one single-quoted script"),
        ("post {\n        unsuccessful {", "post {\n        fixed {", "post condition 'fixed'"),
        ("post {\n        unsuccessful {", "post {\n        always {", "post condition 'always'"),
        ("    environment {", "    tools {", "section 'tools'"),
        ("    environment {", PARAMETERS, "section 'parameters'"),
        # The shape of the old Jenkinsfile: a stage's own post block (its report now comes from its command).
        (LAST_STAGE_END, STAGE_POST + LAST_STAGE_END[13:], "one `steps"),
        # `when`: only `environment name: ..., value: ...`, alone, before the steps.
        (WHEN, "when { expression { return true } }", "when condition 'expression'"),
        (WHEN, "when { branch 'main' }", "when condition 'branch'"),
        (WHEN, "when { not { environment name: 'ACTION', value: 'scale_out' } }", "when condition 'not'"),
        (WHEN, "when { allOf { environment name: 'ACTION', value: 'scale_in' } }", "when condition 'allOf'"),
        (WHEN, "when { environment name: 'ACTION', value: 'scale_in'; branch 'x' }", "exactly one"),
        (WHEN, "when { environment name: 'ACTION', value: 'scale_in', ignoreCase: true }", "not supported"),
        (WHEN, "when { environment value: 'scale_in', name: 'ACTION' }", "not supported"),
        (WHEN, "when { beforeAgent true }", "when condition 'beforeAgent'"),
    ],
)
def test_runner_refuses_what_it_would_not_run_faithfully(old, new, reason):
    """Anything the stand-in could only guess at fails the parse (and so a test), instead of running differently."""
    assert old in SOURCE
    with pytest.raises(PipelineSyntaxError, match=re.escape(reason)):
        parse_pipeline(SOURCE.replace(old, new, 1))
