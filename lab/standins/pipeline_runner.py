"""A build runner for the Jenkins stand-in that runs the autoscale Jenkinsfile the way Jenkins would.

The runner reads the pipeline script of the job (the Jenkinsfile the portal embedded in the job's config.xml) and
executes it: the `environment {}` block, then each `stage` in order (a stage whose `when { environment name: 'X',
value: 'v' }` does not hold, i.e. whose environment variable X is not exactly v, is skipped as Jenkins skips it:
"Stage 'T' skipped due to when conditional"), each `sh '...'` step with `sh -xe` in the
job's workspace, `withCredentials([usernamePassword(...), ...])` binding the lab's credentials to the named
variables, and the pipeline's `post { unsuccessful { ... } }`. A failing `sh` fails its stage and skips the rest;
a stop (python-jenkins `stop_build`) kills the running `sh` (SIGTERM to its process group, as Jenkins does) and the
build ends ABORTED after the post block. Nothing about the scale-out is written here: the stages, their commands
and their order come from the Jenkinsfile only, and the step commands report to the portal themselves, so the lab
cannot drift from it; anything else (stage `post` blocks, other post conditions, other `when` conditions such as
`expression`, `branch`, `allOf` or `not`, `parameters {}`, `echo`, `script`, double-quoted strings) fails the build
with a message saying so.

Select it with the stand-in's behaviour (see lab/standins/jenkins.py):
    {"runner": "lab.standins.pipeline_runner:PipelineRunner",
     "env": {...agent variables: VCENTER_URL, F5_URL, PORTAL_HOME, PORTAL_PYTHON, timeouts...},
     "credentials": {"vmautoscale-vcenter": {"username": "...", "password": "..."}, ...},
     "workspace_root": "/path" (default: a temp dir)}
(A test that must act at a point of a build holds the step there in its "running" report, in front of the portal:
tests/pipeline/conftest.py's PortalProxy; a stage's command may run several steps, so a stage is no such point.)
The console log shows each stage with its duration ("[Pipeline] stage 'X' SUCCESS in 0.123 s"); secrets (bound
credentials and password parameters) are masked.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JENKINSFILE = ROOT / "jenkins" / "Jenkinsfile.autoscale"
POST_CONDITIONS = ("unsuccessful",)


class PipelineSyntaxError(Exception):
    """The Jenkinsfile uses something this runner (and so the lab) does not understand."""


# --- parsing ---------------------------------------------------------------------------------------------------
@dataclass
class Token:
    kind: str  # "word", "string", "punct", "newline"
    value: str
    line: int


def _unescape(text):
    """Groovy's escapes in a single-quoted (non-interpolating) string, and a backslash before a newline."""
    out, i = [], 0
    simple = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "$": "$", "r": "\r"}
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "\n":
                i += 2
                continue
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
        out.append(char)
        i += 1
    return "".join(out)


def tokenize(source):
    tokens, i, line, depth = [], 0, 1, 0
    while i < len(source):
        char = source[i]
        if char == "\n":
            if depth == 0:
                tokens.append(Token("newline", "\n", line))
            line += 1
            i += 1
        elif char in " \t\r;":
            if char == ";" and depth == 0:
                tokens.append(Token("newline", ";", line))
            i += 1
        elif source.startswith("//", i):
            i = source.find("\n", i) if "\n" in source[i:] else len(source)
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise PipelineSyntaxError(f"line {line}: unterminated comment")
            line += source.count("\n", i, end)
            i = end + 2
        elif char == '"':
            # Groovy interpolates double-quoted strings; the file uses single quotes only, so nothing is guessed.
            raise PipelineSyntaxError(f"line {line}: double-quoted strings are not supported; use '...' or '''...'''")
        elif source.startswith("'''", i):
            end = source.find("'''", i + 3)
            while end > 0 and source[end - 1] == "\\":
                end = source.find("'''", end + 1)
            if end < 0:
                raise PipelineSyntaxError(f"line {line}: unterminated ''' string")
            raw = source[i + 3 : end]
            tokens.append(Token("string", _unescape(raw), line))
            line += raw.count("\n")
            i = end + 3
        elif char == "'":
            j = i + 1
            while j < len(source) and source[j] != char:
                if source[j] == "\n":
                    raise PipelineSyntaxError(f"line {line}: unterminated string")
                j += 2 if source[j] == "\\" else 1
            tokens.append(Token("string", _unescape(source[i + 1 : j]), line))
            i = j + 1
        elif char in "{}()[],:=":
            if char in "([":
                depth += 1
            elif char in ")]":
                depth -= 1
                if depth < 0:
                    raise PipelineSyntaxError(f"line {line}: unbalanced {char!r}")
            tokens.append(Token("punct", char, line))
            i += 1
        else:
            match = re.match(r"[A-Za-z_][A-Za-z0-9_.]*|-?\d+(\.\d+)?|\S", source[i:])
            tokens.append(Token("word", match.group(0), line))
            i += len(match.group(0))
    if depth:
        raise PipelineSyntaxError("unbalanced parentheses or brackets")
    return tokens


@dataclass
class Node:
    head: list  # tokens of the statement before its block
    children: list | None  # statements of its { } block, or None
    line: int

    @property
    def name(self):
        return self.head[0].value if self.head and self.head[0].kind == "word" else ""

    def strings(self):
        return [t.value for t in self.head if t.kind == "string"]

    def named(self, key):
        """Value of `key: 'value'` arguments, in order of appearance."""
        values = []
        for a, b, c in zip(self.head, self.head[1:], self.head[2:], strict=False):
            if a.kind == "word" and a.value == key and b.value == ":" and c.kind == "string":
                values.append(c.value)
        return values


def parse_block(tokens, pos=0, *, top=False):
    nodes, head = [], []
    while pos < len(tokens):
        token = tokens[pos]
        if token.kind == "newline":
            if head:
                nodes.append(Node(head, None, head[0].line))
                head = []
            pos += 1
        elif token.value == "{" and token.kind == "punct":
            children, pos = parse_block(tokens, pos + 1)
            nodes.append(Node(head, children, head[0].line if head else token.line))
            head = []
        elif token.value == "}" and token.kind == "punct":
            if top:
                raise PipelineSyntaxError(f"line {token.line}: unbalanced '}}'")
            if head:
                nodes.append(Node(head, None, head[0].line))
            return nodes, pos + 1
        else:
            head.append(token)
            pos += 1
    if not top:
        raise PipelineSyntaxError("a '{' block is not closed")
    if head:
        nodes.append(Node(head, None, head[0].line))
    return nodes, pos


@dataclass
class Sh:
    script: str
    line: int


@dataclass
class WithCredentials:
    bindings: list  # (credentials id, username variable, password variable)
    steps: list
    line: int


@dataclass
class Stage:
    title: str
    steps: list
    when: tuple | None = None  # (environment variable, value): run only when the variable is exactly that

    def runs(self, env):
        return self.when is None or env.get(self.when[0], "") == self.when[1]


@dataclass
class Pipeline:
    environment: dict
    stages: list
    post: dict  # condition -> steps

    def commands(self):
        """Every sh script of the stages, in order, as (stage title, script)."""
        return [(stage.title, sh.script) for stage in self.stages for sh in _walk(stage.steps)]


def _walk(steps):
    for step in steps:
        if isinstance(step, Sh):
            yield step
        elif isinstance(step, WithCredentials):
            yield from _walk(step.steps)


def _steps(nodes):
    steps = []
    for node in nodes:
        if node.name == "sh":
            if len(node.head) != 2 or node.head[1].kind != "string" or node.children is not None:
                raise PipelineSyntaxError(f"line {node.line}: sh needs one single-quoted script: sh '...'")
            steps.append(Sh(node.head[1].value, node.line))
        elif node.name == "withCredentials" and node.children is not None:
            ids, users = node.named("credentialsId"), node.named("usernameVariable")
            passwords = node.named("passwordVariable")
            if not ids or not (len(ids) == len(users) == len(passwords)):
                raise PipelineSyntaxError(f"line {node.line}: withCredentials supports usernamePassword(...) bindings")
            bindings = list(zip(ids, users, passwords, strict=True))
            steps.append(WithCredentials(bindings, _steps(node.children), node.line))
        else:
            raise PipelineSyntaxError(f"line {node.line}: step {node.name or node.head[0].value!r} is not supported")
    return steps


def _post(node):
    conditions = {}
    for cond in node.children or []:
        if cond.name not in POST_CONDITIONS or cond.children is None:
            raise PipelineSyntaxError(f"line {cond.line}: post condition {cond.name!r} is not supported")
        conditions[cond.name] = _steps(cond.children)
    return conditions


def _when(node):
    """`when { environment name: 'X', value: 'v' }`, the one condition the runner evaluates: (X, v)."""
    conditions = node.children or []
    if node.children is None or len(node.head) != 1 or len(conditions) != 1:
        raise PipelineSyntaxError(f"line {node.line}: `when` holds exactly one `environment name: '...', value: '...'`")
    condition = conditions[0]
    names, values = condition.named("name"), condition.named("value")
    shape = [t.value for t in condition.head if t.kind != "string"]
    if (
        condition.name != "environment"
        or condition.children is not None
        or shape
        != [
            "environment",
            "name",
            ":",
            ",",
            "value",
            ":",
        ]
    ):
        raise PipelineSyntaxError(
            f"line {condition.line}: when condition {condition.name!r} is not supported; use "
            "environment name: '...', value: '...'"
        )
    return names[0], values[0]


def parse_pipeline(source):
    nodes, _pos = parse_block(tokenize(source), top=True)
    pipelines = [n for n in nodes if n.name == "pipeline" and n.children is not None]
    if len(pipelines) != 1 or len(nodes) != 1:
        raise PipelineSyntaxError("the file must hold exactly one declarative `pipeline { }` block")
    environment, stages, post = {}, [], {}
    for section in pipelines[0].children:
        if section.name == "environment":
            for item in section.children or []:
                if len(item.head) != 3 or item.head[1].value != "=" or item.head[2].kind != "string":
                    raise PipelineSyntaxError(f"line {item.line}: environment entries must be NAME = 'value'")
                environment[item.head[0].value] = item.head[2].value
        elif section.name == "stages":
            for node in section.children or []:
                titles = node.strings()
                if node.name != "stage" or len(titles) != 1 or node.children is None:
                    raise PipelineSyntaxError(f"line {node.line}: expected stage('Title') {{ ... }}")
                parts = node.children
                when = None
                if parts and parts[0].name == "when":
                    when, parts = _when(parts[0]), parts[1:]
                if len(parts) != 1 or parts[0].name != "steps" or parts[0].children is None:
                    raise PipelineSyntaxError(
                        f"line {node.line}: a stage holds one `steps {{ }}` (after an optional `when {{ }}`) and "
                        "nothing else"
                    )
                stages.append(Stage(titles[0], _steps(parts[0].children), when))
        elif section.name == "post":
            post = _post(section)
        elif section.name in ("agent", "options"):
            continue  # scheduling hints for Jenkins: nothing to run here
        else:
            raise PipelineSyntaxError(f"line {section.line}: pipeline section {section.name!r} is not supported")
    if not stages:
        raise PipelineSyntaxError("the pipeline has no stages")
    return Pipeline(environment, stages, post)


def job_script(config_xml):
    """The inline pipeline script of a job's config.xml (CpsFlowDefinition), or None."""
    if not config_xml:
        return None
    with contextlib.suppress(ET.ParseError):
        script = ET.fromstring(config_xml).find("./definition/script")
        if script is not None and (script.text or "").strip():
            return script.text
    return None


# --- running ---------------------------------------------------------------------------------------------------
class _Aborted(Exception):
    pass


class PipelineRunner:
    def __init__(self, behaviour):
        self.behaviour = behaviour

    def run(self, build):
        self.build = build
        source = job_script(build.config_xml)
        origin = f"job {build.job_name}"
        if source is None:
            source = Path(self.behaviour.get("jenkinsfile") or JENKINSFILE).read_text()
            origin = "jenkins/Jenkinsfile.autoscale"
        try:
            pipeline = parse_pipeline(source)
        except PipelineSyntaxError as exc:
            build.log(f"WorkflowScript ({origin}): {exc}")
            return "FAILURE"
        root = Path(self.behaviour.get("workspace_root") or Path(tempfile.gettempdir()) / "lab-jenkins-workspace")
        workspace = root / build.job_name
        workspace.mkdir(parents=True, exist_ok=True)
        self.secrets = {str(v) for k, v in build.parameters.items() if k in build.secret_parameters and v}
        self.env = {
            **os.environ,
            **{k: str(v) for k, v in (self.behaviour.get("env") or {}).items()},
            **build.env,
            "WORKSPACE": str(workspace),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.update(pipeline.environment)
        self.workspace = workspace
        result = "SUCCESS"
        for stage in pipeline.stages:
            if result != "SUCCESS":
                build.log(f"[Pipeline] stage '{stage.title}' skipped due to earlier failure(s)")
                continue
            if not stage.runs(self.env):
                build.log(f"[Pipeline] stage '{stage.title}' skipped due to when conditional")
                continue
            started = time.monotonic()
            build.log(f"[Pipeline] stage '{stage.title}'")
            stage_result = self._steps(stage.steps, self.env, abortable=True)
            build.log(f"[Pipeline] stage '{stage.title}' {stage_result} in {time.monotonic() - started:.3f} s")
            result = stage_result
        if result != "SUCCESS" and "unsuccessful" in pipeline.post:
            build.log("[Pipeline] post (unsuccessful)")
            self._steps(pipeline.post["unsuccessful"], self.env, abortable=False)
        return result

    def _steps(self, steps, env, *, abortable):
        for step in steps:
            if abortable and self.build.aborted:
                return "ABORTED"
            if isinstance(step, WithCredentials):
                bound = dict(env)
                credentials = self.behaviour.get("credentials") or {}
                for cred_id, user_var, pass_var in step.bindings:
                    if cred_id not in credentials:
                        self.build.log(f"ERROR: Could not find credentials entry with ID '{cred_id}'")
                        return "FAILURE"
                    bound[user_var] = credentials[cred_id]["username"]
                    bound[pass_var] = credentials[cred_id]["password"]
                    self.secrets.add(credentials[cred_id]["password"])
                outcome = self._steps(step.steps, bound, abortable=abortable)
                if outcome != "SUCCESS":
                    return outcome
            else:
                outcome = self._sh(step.script, env, abortable=abortable)
                if outcome != "SUCCESS":
                    return outcome
        return "SUCCESS"

    def _mask(self, text):
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "****")
        return text

    def _sh(self, script, env, *, abortable):
        self.build.log("[Pipeline] sh")
        proc = subprocess.Popen(
            ["sh", "-xe", "-c", script],
            cwd=self.workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        reader = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        reader.start()
        aborted = False
        while proc.poll() is None:
            if abortable and not aborted and self.build.aborted:
                aborted = True
                self.build.log("Sending interrupt signal to process")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                # Wait for the whole process group (the step command, not only sh) to finish its own clean-up.
                deadline = time.monotonic() + 10
                while _group_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    proc.poll()
                if _group_alive(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            elif reader.is_alive():
                # Back as soon as the command closes its output (it ended), else in 50 ms to look for a stop.
                reader.join(0.05)
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        reader.join(timeout=5)
        if aborted:
            return "ABORTED"
        if proc.returncode != 0:
            self.build.log(f"ERROR: script returned exit code {proc.returncode}")
            return "FAILURE"
        return "SUCCESS"

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            self.build.log(self._mask(raw.decode(errors="replace").rstrip("\n")))
        stream.close()


def _group_alive(pgid):
    """True while a process of the group still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def lab_behaviour(lab, *, portal_home=None, python=None, **extra):
    """The stand-in behaviour that runs the scale-out pipeline against this lab's simulator and F5 stand-in."""
    vcsim, f5 = lab.info("vcsim"), lab.info("f5")
    env = {
        "VCENTER_URL": vcsim["url"],
        "VCENTER_VERIFY_TLS": "false",
        "F5_URL": f5["url"],
        "F5_VERIFY_TLS": "false",
        "PORTAL_HOME": str(portal_home or ROOT),
        "PORTAL_PYTHON": python or sys.executable,
        "POLL_INTERVAL": "0.2",
        **{k: str(v) for k, v in (extra.pop("env", None) or {}).items()},
    }
    return {
        "runner": "lab.standins.pipeline_runner:PipelineRunner",
        "env": env,
        "credentials": {
            "vmautoscale-vcenter": {
                "username": vcsim["env"]["VCENTER_USER"],
                "password": vcsim["env"]["VCENTER_PASSWORD"],
            },
            "vmautoscale-f5": {"username": f5["user"], "password": f5["password"]},
        },
        "workspace_root": str(lab.run_dir / "jenkins-workspace"),
        "queue_delay": 0,
        **extra,
    }


def main(argv=None):
    """Make the running lab's Jenkins stand-in run every job's builds with this runner (for `make run`)."""
    import argparse

    from lab.components.jenkins import JenkinsStandinControl
    from lab.core import DEFAULT_RUN_DIR, Lab

    parser = argparse.ArgumentParser(prog="python -m lab.standins.pipeline_runner", description=main.__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    parser.add_argument("--job", help="only this job (default: every job)")
    args = parser.parse_args(argv)
    lab = Lab(args.run_dir)
    control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
    control.set_build_behaviour(job=args.job, **lab_behaviour(lab))
    print(f"Jenkins stand-in: builds of {args.job or 'every job'} run the Jenkinsfile against the lab")


if __name__ == "__main__":
    main()
