"""Jenkins stand-in: the part of Jenkins' REST API that python-jenkins 1.8.3 uses, in memory, on a loopback port.

    python -m lab.standins.jenkins --port 18080 --user autoscale     (API token in $JENKINS_STANDIN_TOKEN)

Protocol (every response carries `X-Jenkins`; everything but /_lab/ needs HTTP basic auth with the user and its API
token, else 401): `api/json`, `me/api/json`, `crumbIssuer/api/json` (a crumb is checked when sent; API-token
requests need none, as in Jenkins), `createItem?name=` + config.xml, `job/NAME/config.xml` GET/POST,
`job/NAME/{doDelete,enable,disable}`, `job/NAME/api/json` (honours `tree=` with `{m,n}` ranges),
`job/NAME/{build,buildWithParameters}` -> 201 + `Location: .../queue/item/ID/`, `queue/item/ID/api/json`,
`queue/api/json`, `queue/cancelItem?id=`, `job/NAME/N/{api/json,consoleText,stop}` (N may be a permalink such as
`lastBuild`). The Generic Webhook Trigger plugin's `POST generic-webhook-trigger/invoke` (no log-in: the token,
from `?token=`, a `token` header or `Authorization: Bearer`, selects the jobs whose trigger has that `<token>` or
whose `<tokenCredentialId>` names a "Secret text" credential holding it; only the trigger's `genericVariables`
(`$.NAME` JSONPath on the JSON body) are read, and a job builds when its regexpFilterText, with those variables
filled in, matches its regexpFilterExpression; every other parameter keeps the job's default). Folders are not
supported. Identical queued requests (same job, same parameters) share one queue item,
as Jenkins does.

Builds are run by a pluggable *build runner* in a thread of their own. The default runner ("default") writes a
console log, waits `duration` seconds (stoppable) and finishes with `result`; `duration: null` keeps the build
running until `/_lab/builds/JOB/N/finish` or a stop. A runner is a class registered with `register_runner(name,
cls)` (in a module imported with `--runner-module`, see $LAB_JENKINS_RUNNER_MODULES in lab/components/jenkins.py)
or named as "package.module:Class"; it is created with the behaviour dict and its `run(build)` gets a
`RunningBuild` (parameters, env with WORKSPACE/BUILD_URL/parameters, log(), run_command() for `sh`-like steps that
stream into the console and die with the build, wait_abort(), wait_release()) and returns the result.

Control API (no auth), besides the common one in lab/standins/http_base.py:
    POST /_lab/behaviour  {"job": optional, "runner": "default", "result": "SUCCESS", "duration": 0.2,
                           "log_lines": [...], "queue_delay": 0.1, ...runner options}   ("job" = only that job;
                           "reset": true first forgets earlier settings for that scope)
    GET  /_lab/behaviour
    GET  /_lab/jobs                         {name: {disabled, next_build_number, builds: [numbers]}}
    GET  /_lab/jobs/NAME                    + config_xml
    GET  /_lab/builds/NAME/N                the build with its console and raw parameter values
    POST /_lab/builds/NAME/N/finish {"result": "SUCCESS"}   ends a build held by `duration: null`
    POST /_lab/credentials {"id": "...", "secret": "..."}   a "Secret text" credential (for tokenCredentialId)
    POST /_lab/reset {"scope": "all"}       also forgets jobs, queue, behaviour and credentials
"""

import contextlib
import importlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

from lab.standins.http_base import (
    App,
    Response,
    base_arguments,
    json_response,
    serve,
    text_response,
)

JENKINS_VERSION = "2.440.3"
CRUMB_FIELD = "Jenkins-Crumb"
RESULTS = ("SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED")
DEFAULT_BEHAVIOUR = {"runner": "default", "result": "SUCCESS", "duration": 0.2, "log_lines": [], "queue_delay": 0.1}
PERMALINKS = {
    "lastBuild": lambda b: True,
    "lastCompletedBuild": lambda b: not b.building,
    "lastSuccessfulBuild": lambda b: b.result == "SUCCESS",
    "lastFailedBuild": lambda b: b.result == "FAILURE",
    "lastUnsuccessfulBuild": lambda b: b.result not in (None, "SUCCESS"),
}
COLORS = {"SUCCESS": "blue", "UNSTABLE": "yellow", "FAILURE": "red", "ABORTED": "aborted", "NOT_BUILT": "notbuilt"}

# --- build runners ---------------------------------------------------------------------------------------------

_RUNNERS = {}


def register_runner(name, cls):
    """Make a runner class selectable by `name` in the behaviour ({"runner": name})."""
    _RUNNERS[name] = cls


def runner_class(name):
    if name in _RUNNERS:
        return _RUNNERS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown build runner {name!r}; known: {', '.join(sorted(_RUNNERS))} or 'module:Class'")


class DefaultRunner:
    """Writes a console log, waits `duration` seconds (or until released when null) and ends with `result`."""

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def run(self, build):
        for name, value in build.parameters.items():
            build.log(f"[param] {name}={'****' if name in build.secret_parameters else value}")
        for line in self.behaviour.get("log_lines") or ():
            build.log(str(line))
        duration = self.behaviour.get("duration")
        if duration is None:
            return build.wait_release()
        if build.wait_abort(float(duration)):
            return "ABORTED"
        return self.behaviour.get("result", "SUCCESS")


register_runner("default", DefaultRunner)


class RunningBuild:
    """What a runner sees of its build. `parameters` holds the real values (passwords included)."""

    def __init__(self, app, build, behaviour):
        self._app = app
        self._build = build
        self.behaviour = behaviour
        self.job_name = build.job.name
        self.number = build.number
        self.config_xml = build.job.config_xml
        self.parameters = dict(build.parameters)
        self.secret_parameters = {d["name"] for d in build.job.parameter_definitions() if d["type"] == "Password"}
        self.url = build.url
        self.workspace = Path(app.workspace_root) / self.job_name / str(self.number)
        self.env = {
            "JENKINS_URL": app.base_url,
            "WORKSPACE": str(self.workspace),
            "JOB_NAME": self.job_name,
            "BUILD_NUMBER": str(self.number),
            "BUILD_ID": str(self.number),
            "BUILD_URL": self.url,
            "BUILD_TAG": f"jenkins-{self.job_name}-{self.number}",
            **{name: _param_text(value) for name, value in self.parameters.items()},
        }

    def log(self, line):
        self._build.append_console(line)

    @property
    def aborted(self):
        return self._build.abort.is_set()

    def wait_abort(self, seconds):
        """Sleep up to `seconds`; True as soon as the build is stopped."""
        return self._build.abort.wait(seconds)

    def wait_release(self, timeout=None):
        """Block until the control API finishes the build (its result) or it is stopped ("ABORTED")."""
        self._build.release.wait(timeout)
        return "ABORTED" if self.aborted else (self._build.release_result or "SUCCESS")

    def run_command(self, argv, *, env=None, cwd=None, timeout=None):
        """Run a command as a pipeline `sh` step would: the build's env (plus `env`), output into the console,
        killed when the build is stopped or `timeout` passes. Returns the exit code (-9 when killed)."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.log(f"+ {' '.join(str(a) for a in argv)}")
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd or self.workspace,
            env={**os.environ, **self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout if timeout else None

        def watch():
            while proc.poll() is None:
                late = deadline is not None and time.monotonic() > deadline
                if self._build.abort.wait(0.05) or late:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for line in proc.stdout:
            self.log(line)
        code = proc.wait()
        watcher.join()
        return code


# --- the model -------------------------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


def parse_config(xml_text):
    try:
        return ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise BadRequest(f"config.xml is not well-formed XML: {exc}") from exc


class Job:
    def __init__(self, name, config_xml):
        self.name = name
        self.config_xml = config_xml
        self.root = parse_config(config_xml)
        self.builds = {}
        self.next_number = 1

    def set_config(self, config_xml):
        self.root = parse_config(config_xml)
        self.config_xml = config_xml

    @property
    def disabled(self):
        node = self.root.find("disabled")
        return node is not None and (node.text or "").strip() == "true"

    def set_disabled(self, value):
        node = self.root.find("disabled")
        if node is None:
            node = ET.SubElement(self.root, "disabled")
        node.text = "true" if value else "false"
        self.config_xml = "<?xml version='1.1' encoding='UTF-8'?>\n" + ET.tostring(self.root, encoding="unicode")

    @property
    def workflow(self):
        return self.root.tag == "flow-definition"

    def parameter_definitions(self):
        definitions = []
        for node in self.root.findall(".//parameterDefinitions/*"):
            kind = node.tag.rsplit(".", 1)[-1].removesuffix("ParameterDefinition")
            definition = {
                "type": kind,
                "class": node.tag,
                "name": (node.findtext("name") or "").strip(),
                "description": node.findtext("description") or "",
                "default": node.findtext("defaultValue"),
                "choices": [s.text or "" for s in node.findall("./choices//string")],
            }
            if kind == "Choice" and definition["choices"]:
                definition["default"] = definition["choices"][0]
            definitions.append(definition)
        return definitions


class Build:
    def __init__(self, job, number, queue_id, parameters, base_url):
        self.job = job
        self.number = number
        self.queue_id = queue_id
        self.parameters = parameters
        self.url = f"{base_url}job/{quote(job.name)}/{number}/"
        self.timestamp = int(time.time() * 1000)
        self.started = time.monotonic()
        self.duration_ms = 0
        self.result = None
        self.console = []
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.release = threading.Event()
        self.release_result = None
        self.user = None

    @property
    def building(self):
        return self.result is None

    def append_console(self, line):
        with self.lock:
            self.console.append(str(line).rstrip("\n"))

    def console_text(self):
        with self.lock:
            return "".join(line + "\n" for line in self.console)


class QueueItem:
    def __init__(self, item_id, job, parameters, user):
        self.id = item_id
        self.job = job
        self.parameters = parameters
        self.user = user
        self.in_queue_since = int(time.time() * 1000)
        self.build = None
        self.cancelled = False


def _param_text(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


# --- the application -------------------------------------------------------------------------------------------


def _tree_parse(text, pos=0):
    """Parse Jenkins' `tree` syntax ("a,b[c,d]{0,5}") into {key: (subtree | None, range | None)}."""
    spec = {}
    while pos < len(text):
        match = re.compile(r"\s*([A-Za-z0-9_]+)").match(text, pos)
        if not match:
            break
        key, pos = match.group(1), match.end()
        sub = None
        rng = None
        if pos < len(text) and text[pos] == "[":
            sub, pos = _tree_parse(text, pos + 1)
            pos += 1  # the closing bracket
        range_match = re.compile(r"\{(\d*)(?:,(\d*))?\}").match(text, pos)
        if range_match:
            low = int(range_match.group(1) or 0)
            high = range_match.group(2)
            rng = (low, int(high) if high else None) if "," in range_match.group(0) else (low, low + 1)
            pos = range_match.end()
        spec[key] = (sub, rng)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return spec, pos
    return spec, pos


def _tree_apply(data, spec):
    if isinstance(data, list):
        return [_tree_apply(item, spec) for item in data]
    if not isinstance(data, dict):
        return data
    out = {"_class": data["_class"]} if "_class" in data else {}
    for key, (sub, rng) in spec.items():
        if key not in data:
            continue
        value = data[key]
        if rng and isinstance(value, list):
            value = value[rng[0] : rng[1]]
        out[key] = _tree_apply(value, sub) if sub else value
    return out


class JenkinsApp(App):
    server_header = "jenkins-standin"

    def __init__(self, user, token, workspace_root=None):
        super().__init__()
        self.user = user
        self.token = token
        self.workspace_root = workspace_root or tempfile.mkdtemp(prefix="jenkins-standin-")
        self.crumb = os.urandom(16).hex()
        self.lock = threading.RLock()
        self.jobs = {}
        self.queue = {}
        self.next_queue_id = 1
        self.behaviour = {"*": dict(DEFAULT_BEHAVIOUR)}
        self.secret_texts = {}

    def extra_headers(self):
        return {"X-Jenkins": JENKINS_VERSION, "X-Hudson": "1.395", "Server": "Jetty(10.0.20)"}

    def reset(self, scope):
        with self.lock:
            for build in self._all_builds():
                build.abort.set()
                build.release.set()
            self.jobs.clear()
            self.queue.clear()
            self.behaviour = {"*": dict(DEFAULT_BEHAVIOUR)}
            self.secret_texts.clear()

    def _all_builds(self):
        return [build for job in self.jobs.values() for build in job.builds.values()]

    def behaviour_for(self, job_name):
        with self.lock:
            return {**self.behaviour["*"], **self.behaviour.get(job_name, {})}

    # --- protocol ------------------------------------------------------------------------------------------
    def handle(self, request):
        if request.segments == ["generic-webhook-trigger", "invoke"] and request.method == "POST":
            return self._generic_trigger(request)  # anonymous: the trigger's token is the credential
        credentials = request.basic_auth()
        if credentials != (self.user, self.token):
            who = credentials[0] if credentials else "anonymous"
            return text_response(
                f"Invalid password/token for user: {who}" if credentials else "Authentication required",
                401,
                headers={"WWW-Authenticate": 'Basic realm="Jenkins"'},
            )
        crumb = request.headers.get(CRUMB_FIELD.lower())
        if request.method == "POST" and crumb is not None and crumb != self.crumb:
            return text_response("No valid crumb was included in the request", 403)
        try:
            response = self._route(request)
        except BadRequest as exc:
            response = text_response(str(exc), 400)
        response.note = f"user={self.user}"
        return response

    def _route(self, request):
        seg = request.segments
        method = request.method
        if seg in ([], ["api", "json"]) and method == "GET":
            return self._root(request) if seg else text_response("<html>Jenkins</html>", content_type="text/html")
        if seg == ["crumbIssuer", "api", "json"] and method == "GET":
            return json_response(
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": self.crumb,
                    "crumbRequestField": CRUMB_FIELD,
                }
            )
        if seg == ["me", "api", "json"] and method == "GET":
            return json_response(
                {
                    "_class": "hudson.model.User",
                    "id": self.user,
                    "fullName": self.user,
                    "absoluteUrl": f"{self.base_url}user/{self.user}",
                }
            )
        if seg == ["createItem"] and method == "POST":
            return self._create_item(request)
        if seg[:1] == ["queue"]:
            return self._queue(request, seg[1:])
        if len(seg) >= 3 and seg[0] == "job":
            with self.lock:
                job = self.jobs.get(seg[1])
            if job is None:
                return self._not_found()
            return self._job(request, job, seg[2:])
        return self._not_found()

    @staticmethod
    def _not_found():
        return text_response(
            "<html><body><h2>HTTP ERROR 404 Not Found</h2></body></html>", 404, content_type="text/html;charset=utf-8"
        )

    def _root(self, request):
        with self.lock:
            jobs = [self._job_summary(job) for job in self.jobs.values()]
        data = {
            "_class": "hudson.model.Hudson",
            "mode": "NORMAL",
            "nodeDescription": "the Jenkins controller's built-in node (lab stand-in)",
            "nodeName": "",
            "numExecutors": 2,
            "jobs": jobs,
            "quietingDown": False,
            "useCrumbs": True,
            "useSecurity": True,
            "views": [{"_class": "hudson.model.AllView", "name": "all", "url": self.base_url}],
        }
        return self._json(request, data)

    def _json(self, request, data):
        tree = request.query.get("tree")
        if tree:
            data = _tree_apply(data, _tree_parse(tree)[0])
        return json_response(data)

    def _create_item(self, request):
        name = request.query.get("name", "")
        if not name or "/" in name:
            raise BadRequest("Query parameter 'name' is required and may not contain '/'")
        if request.query.get("mode"):
            raise BadRequest("copy and folder creation are not supported by the lab stand-in")
        config = request.body.decode("utf-8")
        with self.lock:
            if name in self.jobs:
                raise BadRequest(f"A job already exists with the name '{name}'")
            self.jobs[name] = Job(name, config)
        return Response(200)

    def _job_class(self, job):
        return "org.jenkinsci.plugins.workflow.job.WorkflowJob" if job.workflow else "hudson.model.FreeStyleProject"

    def _build_class(self, job):
        return "org.jenkinsci.plugins.workflow.job.WorkflowRun" if job.workflow else "hudson.model.FreeStyleBuild"

    def _color(self, job):
        if job.disabled:
            return "disabled"
        with self.lock:
            builds = sorted(job.builds.values(), key=lambda b: b.number)
        if not builds:
            return "notbuilt"
        last_done = next((b for b in reversed(builds) if not b.building), None)
        color = COLORS.get(last_done.result, "notbuilt") if last_done else "notbuilt"
        return color + "_anime" if builds[-1].building else color

    def _job_summary(self, job):
        return {"_class": self._job_class(job), "name": job.name, "url": self._job_url(job), "color": self._color(job)}

    def _job_url(self, job):
        return f"{self.base_url}job/{quote(job.name)}/"

    def _job(self, request, job, rest):
        method = request.method
        if rest == ["api", "json"] and method == "GET":
            data = self._job_data(job)
            if not request.query.get("tree"):  # depth 0: builds are only references
                data["builds"] = [{k: b[k] for k in ("_class", "number", "url")} for b in data["builds"]]
            return self._json(request, data)
        if rest == ["config.xml"]:
            if method == "GET":
                return text_response(job.config_xml, content_type="application/xml;charset=utf-8")
            if method == "POST":
                with self.lock:
                    job.set_config(request.body.decode("utf-8"))
                return Response(200)
        if method == "POST" and rest == ["doDelete"]:
            with self.lock:
                self.jobs.pop(job.name, None)
                for build in job.builds.values():
                    build.abort.set()
            return Response(200)
        if method == "POST" and rest in (["enable"], ["disable"]):
            with self.lock:
                job.set_disabled(rest == ["disable"])
            return Response(200)
        if method == "POST" and rest in (["build"], ["buildWithParameters"]):
            return self._schedule(request, job, with_parameters=rest == ["buildWithParameters"])
        if rest and (rest[0].isdigit() or rest[0] in PERMALINKS):
            build = self._find_build(job, rest[0])
            if build is None:
                return self._not_found()
            return self._build(request, build, rest[1:])
        return self._not_found()

    def _find_build(self, job, ref):
        with self.lock:
            if ref.isdigit():
                return job.builds.get(int(ref))
            matching = [b for b in job.builds.values() if PERMALINKS[ref](b)]
            return max(matching, key=lambda b: b.number) if matching else None

    def _job_data(self, job):
        with self.lock:
            builds = sorted(job.builds.values(), key=lambda b: b.number, reverse=True)
            queued = next((q for q in self.queue.values() if q.job is job and not q.build and not q.cancelled), None)

        def ref(pred):
            build = next((b for b in builds if pred(b)), None)
            return {"_class": self._build_class(job), "number": build.number, "url": build.url} if build else None

        definitions = job.parameter_definitions()
        properties = []
        if definitions:
            properties.append(
                {
                    "_class": "hudson.model.ParametersDefinitionProperty",
                    "parameterDefinitions": [self._definition_json(d) for d in definitions],
                }
            )
        return {
            "_class": self._job_class(job),
            "actions": [{}, {"_class": "hudson.model.ParametersDefinitionProperty"}] if definitions else [{}],
            "description": job.root.findtext("description") or "",
            "displayName": job.name,
            "displayNameOrNull": None,
            "fullDisplayName": job.name,
            "fullName": job.name,
            "name": job.name,
            "url": self._job_url(job),
            "buildable": not job.disabled,
            "disabled": job.disabled,
            "builds": [self._build_data(b) for b in builds[:100]] if builds else [],
            "color": self._color(job),
            "firstBuild": ref(lambda b: b is builds[-1]) if builds else None,
            "healthReport": [],
            "inQueue": queued is not None,
            "keepDependencies": False,
            "lastBuild": ref(PERMALINKS["lastBuild"]),
            "lastCompletedBuild": ref(PERMALINKS["lastCompletedBuild"]),
            "lastFailedBuild": ref(PERMALINKS["lastFailedBuild"]),
            "lastStableBuild": ref(PERMALINKS["lastSuccessfulBuild"]),
            "lastSuccessfulBuild": ref(PERMALINKS["lastSuccessfulBuild"]),
            "lastUnstableBuild": None,
            "lastUnsuccessfulBuild": ref(PERMALINKS["lastUnsuccessfulBuild"]),
            "nextBuildNumber": job.next_number,
            "property": properties,
            "queueItem": {"id": queued.id, "url": f"queue/item/{queued.id}/"} if queued else None,
            "concurrentBuild": True,
            "resumeBlocked": False,
        }

    @staticmethod
    def _definition_json(definition):
        kind = definition["type"]
        value_class = {
            "Boolean": "BooleanParameterValue",
            "Text": "TextParameterValue",
            "Password": "PasswordParameterValue",
        }.get(kind, "StringParameterValue")
        default = {"_class": f"hudson.model.{value_class}", "name": definition["name"]}
        if kind == "Boolean":
            default["value"] = (definition["default"] or "").strip() == "true"
        elif kind != "Password":
            default["value"] = definition["default"] or ""
        data = {
            "_class": definition["class"],
            "defaultParameterValue": default,
            "description": definition["description"],
            "name": definition["name"],
            "type": f"{kind}ParameterDefinition",
        }
        if kind == "Choice":
            data["choices"] = definition["choices"]
        return data

    def _parameter_values(self, job, definitions, values):
        """The build's parameter values: defaults for missing ones; undefined ones dropped (as Jenkins does)."""
        result = {}
        for definition in definitions:
            name = definition["name"]
            raw = values.get(name, definition["default"] if definition["default"] is not None else "")
            if definition["type"] == "Boolean":
                result[name] = str(raw).strip().lower() in ("true", "on", "1")
            elif definition["type"] == "Choice" and raw not in definition["choices"]:
                raise BadRequest(f"Illegal choice for parameter {name}: {raw}")
            else:
                result[name] = raw
        return result

    def _schedule(self, request, job, *, with_parameters):
        if job.disabled:
            return text_response(f"{job.name} is not buildable", 409)
        definitions = job.parameter_definitions()
        if with_parameters and not definitions:
            raise BadRequest(f"{job.name} is not parameterized")
        values = {**request.query, **request.form}
        item = self._enqueue(job, self._parameter_values(job, definitions, values), self.user)
        return Response(201, headers={"Location": f"{self.base_url}queue/item/{item.id}/"})

    def _enqueue(self, job, parameters, user):
        with self.lock:
            for item in self.queue.values():
                if item.job is job and item.build is None and not item.cancelled and item.parameters == parameters:
                    break  # Jenkins folds an identical request into the waiting item
            else:
                item = QueueItem(self.next_queue_id, job, parameters, user)
                self.next_queue_id += 1
                self.queue[item.id] = item
                delay = float(self.behaviour_for(job.name).get("queue_delay") or 0)
                timer = threading.Timer(delay, self._start_build, (item,))
                timer.daemon = True
                timer.start()
        return item

    def _generic_trigger(self, request):
        """The Generic Webhook Trigger plugin's invoke endpoint (see the module's docstring)."""
        bearer = request.headers.get("authorization", "")
        token = (
            request.query.get("token")
            or request.headers.get("token")
            or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else "")
        )
        try:
            body = request.json()
        except ValueError:
            body = {}
        triggered = {}
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            trigger = job.root.find(".//org.jenkinsci.plugins.gwt.GenericTrigger")
            if trigger is None or not token:
                continue
            credential = (trigger.findtext("tokenCredentialId") or "").strip()
            expected = self.secret_texts.get(credential) if credential else (trigger.findtext("token") or "").strip()
            if not expected or token != expected:
                continue
            variables = {}
            for variable in trigger.iter("org.jenkinsci.plugins.gwt.GenericVariable"):
                key, path = variable.findtext("key") or "", variable.findtext("value") or ""
                found = body.get(path[2:]) if isinstance(body, dict) and path.startswith("$.") else None
                variables[key] = "" if found is None else str(found)
            text = trigger.findtext("regexpFilterText") or ""
            for key, value in variables.items():
                text = text.replace(f"${key}", value)
            expression = trigger.findtext("regexpFilterExpression") or ""
            if expression and not re.search(expression, text):
                triggered[job.name] = {"triggered": False, "resolvedVariables": variables}
                continue
            definitions = job.parameter_definitions()
            names = {definition["name"] for definition in definitions}
            values = {key: value for key, value in variables.items() if key in names}
            item = self._enqueue(job, self._parameter_values(job, definitions, values), "GenericWebhookTrigger")
            triggered[job.name] = {"triggered": True, "id": item.id, "resolvedVariables": variables}
        if not triggered:
            return json_response(
                {"jobs": None, "message": "Did not find any jobs with GenericTrigger configured! If you are using a "
                 "token, you need to pass it like ...trigger/invoke?token=TOKENHERE."},
                404,
            )  # fmt: skip
        return json_response({"jobs": triggered, "message": "Triggered jobs."})

    def _start_build(self, item):
        with self.lock:
            job = item.job
            if item.cancelled or self.jobs.get(job.name) is not job:
                return
            build = Build(job, job.next_number, item.id, item.parameters, self.base_url)
            build.user = item.user
            job.next_number += 1
            job.builds[build.number] = build
            item.build = build
        behaviour = self.behaviour_for(job.name)
        thread = threading.Thread(
            target=self._run_build, args=(build, behaviour), daemon=True, name=f"build-{job.name}-{build.number}"
        )
        thread.start()

    def _run_build(self, build, behaviour):
        build.append_console(f"Started by user {build.user}")
        context = RunningBuild(self, build, behaviour)
        try:
            runner = runner_class(behaviour.get("runner") or "default")(behaviour)
            result = runner.run(context)
        except Exception:  # a broken runner fails its build, with the traceback in the console, as Jenkins would
            build.append_console(traceback.format_exc())
            result = "FAILURE"
        if build.abort.is_set():
            result = "ABORTED"
        if result not in RESULTS:
            build.append_console(f"runner returned unknown result {result!r}")
            result = "FAILURE"
        with self.lock:
            build.duration_ms = int((time.monotonic() - build.started) * 1000)
            build.append_console(f"Finished: {result}")
            build.result = result

    @staticmethod
    def _parameters_json(job, values):
        definitions = {d["name"]: d for d in job.parameter_definitions()}
        parameters = []
        for name, value in values.items():
            kind = definitions.get(name, {}).get("type", "String")
            value_class = {
                "Boolean": "BooleanParameterValue",
                "Text": "TextParameterValue",
                "Password": "PasswordParameterValue",
            }.get(kind, "StringParameterValue")
            entry = {"_class": f"hudson.model.{value_class}", "name": name}
            if kind != "Password":  # Jenkins never exports a password parameter's value
                entry["value"] = value
            parameters.append(entry)
        return parameters

    def _build_data(self, build):
        parameters = self._parameters_json(build.job, build.parameters)
        actions = []
        if parameters:
            actions.append({"_class": "hudson.model.ParametersAction", "parameters": parameters})
        actions.append(
            {
                "_class": "hudson.model.CauseAction",
                "causes": [
                    {
                        "_class": "hudson.model.Cause$UserIdCause",
                        "shortDescription": f"Started by user {build.user}",
                        "userId": build.user,
                        "userName": build.user,
                    }
                ],
            }
        )
        duration = build.duration_ms if not build.building else 0
        return {
            "_class": self._build_class(build.job),
            "actions": actions,
            "artifacts": [],
            "building": build.building,
            "description": None,
            "displayName": f"#{build.number}",
            "duration": duration,
            "estimatedDuration": duration or -1,
            "executor": {} if build.building else None,
            "fullDisplayName": f"{build.job.name} #{build.number}",
            "id": str(build.number),
            "keepLog": False,
            "number": build.number,
            "queueId": build.queue_id,
            "result": build.result,
            "timestamp": build.timestamp,
            "url": build.url,
            "inProgress": build.building,
            "changeSets": [],
            "culprits": [],
        }

    def _build(self, request, build, rest):
        if rest == ["api", "json"] and request.method == "GET":
            return self._json(request, self._build_data(build))
        if rest == ["consoleText"] and request.method == "GET":
            return text_response(build.console_text())
        if rest == ["stop"] and request.method == "POST":
            if build.building and not build.abort.is_set():
                build.append_console(f"Aborted by {self.user}")
                build.abort.set()
                build.release.set()
            return Response(200)
        return self._not_found()

    def _queue(self, request, rest):
        if rest == ["api", "json"] and request.method == "GET":
            with self.lock:
                items = [self._queue_data(i) for i in self.queue.values() if i.build is None and not i.cancelled]
            return json_response({"_class": "hudson.model.Queue", "discoverableItems": [], "items": items})
        if rest == ["cancelItem"] and request.method == "POST":
            with self.lock:
                item = self.queue.get(int(request.query.get("id", "0") or 0))
                if item is None:
                    return self._not_found()
                if item.build is None:
                    item.cancelled = True
            return Response(204)
        if len(rest) == 4 and rest[0] == "item" and rest[1].isdigit() and rest[2:] == ["api", "json"]:
            with self.lock:
                item = self.queue.get(int(rest[1]))
            if item is None:
                return self._not_found()
            return self._json(request, self._queue_data(item))
        return self._not_found()

    def _queue_data(self, item):
        job = item.job
        parameters = self._parameters_json(job, item.parameters)
        data = {
            "_class": "hudson.model.Queue$WaitingItem",
            "actions": [
                {"_class": "hudson.model.ParametersAction", "parameters": parameters},
                {
                    "_class": "hudson.model.CauseAction",
                    "causes": [
                        {
                            "_class": "hudson.model.Cause$UserIdCause",
                            "shortDescription": f"Started by user {item.user}",
                            "userId": item.user,
                            "userName": item.user,
                        }
                    ],
                },
            ],
            "blocked": False,
            "buildable": False,
            "id": item.id,
            "inQueueSince": item.in_queue_since,
            "params": "".join(f"\n{p['name']}={_param_text(p.get('value', '****'))}" for p in parameters),
            "stuck": False,
            "task": {
                "_class": self._job_class(job),
                "name": job.name,
                "url": self._job_url(job),
                "color": self._color(job),
            },
            "url": f"queue/item/{item.id}/",
            "why": "In the quiet period.",
        }
        if item.cancelled or item.build is not None:
            data["_class"] = "hudson.model.Queue$LeftItem"
            data["why"] = None
            data["cancelled"] = item.cancelled
            data["executable"] = (
                {"_class": self._build_class(job), "number": item.build.number, "url": item.build.url}
                if item.build
                else None
            )
        else:
            data["timestamp"] = item.in_queue_since
        return data

    # --- control -------------------------------------------------------------------------------------------
    def control(self, request):
        seg = request.segments[1:]  # after "_lab"
        method = request.method
        if seg == ["behaviour"]:
            if method == "POST":
                spec = dict(request.json())
                scope = spec.pop("job", None) or "*"
                if spec.pop("reset", False):
                    with self.lock:
                        self.behaviour[scope] = dict(DEFAULT_BEHAVIOUR) if scope == "*" else {}
                if "result" in spec and spec["result"] not in RESULTS:
                    raise ValueError(f"result must be one of {', '.join(RESULTS)}")
                if "runner" in spec:
                    runner_class(spec["runner"])
                with self.lock:
                    self.behaviour.setdefault(scope, {}).update(spec)
            with self.lock:
                return json_response(self.behaviour)
        if seg == ["credentials"] and method == "POST":
            spec = request.json()
            with self.lock:
                self.secret_texts[str(spec["id"])] = str(spec["secret"])
            return json_response({"ok": True})
        if seg == ["jobs"] and method == "GET":
            with self.lock:
                return json_response(
                    {
                        name: {
                            "disabled": job.disabled,
                            "next_build_number": job.next_number,
                            "builds": sorted(job.builds),
                        }
                        for name, job in self.jobs.items()
                    }
                )
        if len(seg) == 2 and seg[0] == "jobs" and method == "GET":
            with self.lock:
                job = self.jobs.get(seg[1])
                if job is None:
                    return json_response({"error": f"no job {seg[1]}"}, 404)
                return json_response(
                    {
                        "name": job.name,
                        "disabled": job.disabled,
                        "config_xml": job.config_xml,
                        "next_build_number": job.next_number,
                        "builds": sorted(job.builds),
                    }
                )
        if len(seg) >= 3 and seg[0] == "builds" and seg[2].isdigit():
            with self.lock:
                job = self.jobs.get(seg[1])
                build = job.builds.get(int(seg[2])) if job else None
            if build is None:
                return json_response({"error": f"no build {seg[1]} #{seg[2]}"}, 404)
            if len(seg) == 4 and seg[3] == "finish" and method == "POST":
                result = request.json().get("result", "SUCCESS")
                if result not in RESULTS:
                    raise ValueError(f"result must be one of {', '.join(RESULTS)}")
                build.release_result = result
                build.release.set()
                return json_response({"ok": True})
            if len(seg) == 3 and method == "GET":
                return json_response(
                    {
                        "job": build.job.name,
                        "number": build.number,
                        "queue_id": build.queue_id,
                        "building": build.building,
                        "result": build.result,
                        "duration_ms": build.duration_ms,
                        "parameters": build.parameters,
                        "console": build.console_text(),
                        "url": build.url,
                    }
                )
        return None


def main(argv=None):
    parser = base_arguments("Jenkins REST API stand-in for the lab")
    parser.add_argument("--user", default="autoscale")
    parser.add_argument("--workspace-root", help="where builds get their WORKSPACE (default: a temp dir)")
    parser.add_argument(
        "--runner-module", action="append", default=[], help="import this module at start (it may call register_runner)"
    )
    args = parser.parse_args(argv)
    token = os.environ.get("JENKINS_STANDIN_TOKEN")
    if not token:
        raise SystemExit("jenkins stand-in: set JENKINS_STANDIN_TOKEN to the API token to accept")
    for module in args.runner_module:
        importlib.import_module(module)
    serve(JenkinsApp(args.user, token, args.workspace_root), args.host, args.port)


if __name__ == "__main__":
    # Run inside the importable module, so runner modules that import lab.standins.jenkins share its registry.
    from lab.standins import jenkins

    jenkins.main()
