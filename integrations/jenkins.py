"""Jenkins through python-jenkins: jobs (config.xml), builds with parameters, the queue, build history and logs.

Every call goes through `JenkinsClient._call`, which owns the python-jenkins handle (basic auth with an API token,
crumb, time-out) and turns every failure into `IntegrationError(system="jenkins")`:

    code            permanent  when
    not_found       yes        Jenkins has no such job, build or queue item (HTTP 404)
    unauthorized    yes        the user or API token was refused (401/403)
    invalid         yes        Jenkins refused the request as malformed (400)
    not_buildable   yes        the job is disabled (409 on a build request)
    unreachable     no         no connection, connection reset or closed without an answer
    timeout         no         no answer within the client's time-out
    server_error    no         Jenkins answered 5xx
    bad_response    no         an answer that is not what Jenkins sends (e.g. JSON that does not parse)

python-jenkins folds status codes into message strings and some of its getters turn any HTTP error into "does not
exist", so reads go through `Jenkins.jenkins_request` (its documented low-level call) and keep the real status.
A client object is not thread-safe (python-jenkins caches the crumb on it): use one per thread or task.
"""

import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode, urljoin

import requests

import jenkins
from integrations.errors import IntegrationError
from integrations.http import short, status_error, timeout_error, transport_error

SYSTEM = "jenkins"
BUILD_TREE = "number,url,result,building,duration,timestamp,queueId,actions[parameters[name,value]]"


@dataclass(frozen=True)
class JobParameter:
    name: str
    type: str  # "String", "Boolean", "Choice", "Password", "Text", ...
    default: object  # str, bool or None (a password's default is never exported)
    description: str = ""
    choices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobInfo:
    name: str
    url: str
    enabled: bool
    buildable: bool
    color: str
    parameters: list[JobParameter]
    last_build_number: int | None
    last_completed_build_number: int | None
    next_build_number: int
    in_queue: bool


@dataclass(frozen=True)
class QueueItem:
    id: int
    job_name: str | None
    build_number: int | None  # set once an executor picked the item up
    build_url: str | None
    cancelled: bool
    why: str | None  # why it is still waiting, while it is
    parameters: dict | None = None  # read by `queued` (the queue's listing), not by `queue_item`

    @property
    def started(self):
        return self.build_number is not None


@dataclass(frozen=True)
class BuildInfo:
    job_name: str
    number: int
    result: str | None  # SUCCESS, FAILURE, ABORTED, UNSTABLE, NOT_BUILT; None while building
    building: bool
    duration_ms: int
    timestamp: datetime | None
    url: str
    parameters: dict  # name -> value; a password parameter's value is None (Jenkins never exports it)
    queue_id: int | None = None


class JenkinsClient:
    def __init__(self, url, user, token, timeout=10.0):
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self._server = jenkins.Jenkins(self.url, username=user, password=token, timeout=timeout)

    # --- the choke point -----------------------------------------------------------------------------------
    def _call(self, doing, fn, *args, missing=None):
        """Run one python-jenkins call; `doing` says what for the error message, `missing` what a 404 means."""
        try:
            return fn(*args)
        except IntegrationError:
            raise
        except jenkins.NotFoundException as exc:
            raise self._error(404, doing, missing=missing) from exc
        except jenkins.TimeoutException as exc:
            raise timeout_error(
                system=SYSTEM, product="Jenkins", url=self.url, doing=doing, timeout=self.timeout
            ) from exc
        except requests.HTTPError as exc:
            response = exc.response
            raise self._error(response.status_code, doing, missing=missing, detail=response.text) from exc
        except requests.RequestException as exc:
            raise transport_error(
                exc, system=SYSTEM, product="Jenkins", url=self.url, doing=doing, timeout=self.timeout
            ) from exc
        except jenkins.JenkinsException as exc:
            # python-jenkins reports 401, 403 and 500 only inside the message: "... [401]: Unauthorized"
            match = re.search(r"\[(\d{3})\]", str(exc))
            if match:
                raise self._error(int(match.group(1)), doing, missing=missing) from exc
            raise IntegrationError(
                f"Jenkins at {self.url} failed while {doing}: {exc}", system=SYSTEM, code="bad_response"
            ) from exc
        except ValueError as exc:  # JSON that does not parse
            raise IntegrationError(
                f"Jenkins at {self.url} sent an answer that could not be read while {doing}: {exc}",
                system=SYSTEM,
                code="bad_response",
            ) from exc

    def _error(self, status, doing, *, missing=None, detail=""):
        """The shared translation of an HTTP status, with what a 409 means to Jenkins."""
        kwargs = {}
        if status == 409:
            kwargs = {
                "code": "not_buildable",
                "message": f"Jenkins refused to build while {doing}: the job is disabled or not buildable. "
                f"{short(detail)}".strip(),
            }
        return status_error(
            status,
            system=SYSTEM,
            product="Jenkins",
            url=self.url,
            doing=doing,
            detail="" if status == 404 else detail,  # Jenkins' 404 page says nothing more
            missing=missing,
            hint="check JENKINS_USER and JENKINS_TOKEN",
            **kwargs,
        )

    def _get(self, path, query=None):
        url = urljoin(self.url, path) + (f"?{urlencode(query)}" if query else "")
        return self._server.jenkins_request(requests.Request("GET", url))

    def _get_json(self, path, query=None):
        return self._get(path, query).json()

    # --- server --------------------------------------------------------------------------------------------
    def version(self):
        """The X-Jenkins version header (also proves the credentials work)."""
        response = self._call("reading the server version", self._get, "api/json", {"tree": "mode"})
        return response.headers.get("X-Jenkins", "")

    # --- jobs ----------------------------------------------------------------------------------------------
    def job_exists(self, name):
        try:
            self._call(f"looking up job {name}", self._get_json, _job(name, "api/json"), {"tree": "name"})
        except IntegrationError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    def job_config(self, name):
        """The job's config.xml, or None when there is no such job."""
        try:
            response = self._call(f"reading the configuration of job {name}", self._get, _job(name, "config.xml"))
        except IntegrationError as exc:
            if exc.code == "not_found":
                return None
            raise
        return response.text

    def create_or_update_job(self, name, xml):
        """ "created", "updated" or "unchanged" (configs are compared as canonical XML, ignoring whitespace)."""
        current = self.job_config(name)
        if current is None:
            return self.create_job(name, xml)
        if _same_xml(current, xml):
            return "unchanged"
        return self.update_job(name, xml)

    def create_job(self, name, xml):
        """Create the job: "created", or "updated" when someone else created it since the caller looked."""
        try:
            self._call(f"creating job {name}", self._server.create_job, name, xml)
        except IntegrationError as exc:
            if "already exists" not in exc.message:
                raise
            # created by someone else since we looked: make it ours
            self._call(f"updating job {name}", self._server.reconfig_job, name, xml, missing=f"job {name}")
            return "updated"
        return "created"

    def update_job(self, name, xml):
        """Replace the job's config.xml (for a caller that has read it already): "updated", or "created" when the
        job was deleted since the caller looked."""
        try:
            self._call(f"updating job {name}", self._server.reconfig_job, name, xml, missing=f"job {name}")
        except IntegrationError as exc:
            if exc.code != "not_found":
                raise
            return self.create_job(name, xml)
        return "updated"

    def delete_job(self, name):
        """Delete the job; False when it did not exist."""
        try:
            self._call(f"deleting job {name}", self._server.delete_job, name, missing=f"job {name}")
        except IntegrationError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    def enable_job(self, name):
        self._call(f"enabling job {name}", self._server.enable_job, name, missing=f"job {name}")

    def disable_job(self, name):
        self._call(f"disabling job {name}", self._server.disable_job, name, missing=f"job {name}")

    def job_info(self, name):
        data = self._call(f"reading job {name}", self._get_json, _job(name, "api/json"), missing=f"job {name}")
        parameters = []
        for prop in data.get("property") or ():
            for definition in prop.get("parameterDefinitions") or ():
                default = (definition.get("defaultParameterValue") or {}).get("value")
                parameters.append(
                    JobParameter(
                        name=definition.get("name", ""),
                        type=(definition.get("type") or "").removesuffix("ParameterDefinition"),
                        default=default,
                        description=definition.get("description") or "",
                        choices=list(definition.get("choices") or ()),
                    )
                )
        color = data.get("color") or ""
        disabled = data.get("disabled", color == "disabled")
        return JobInfo(
            name=data.get("name", name),
            url=data.get("url", ""),
            enabled=not disabled,
            buildable=bool(data.get("buildable", not disabled)),
            color=color,
            parameters=parameters,
            last_build_number=_number(data.get("lastBuild")),
            last_completed_build_number=_number(data.get("lastCompletedBuild")),
            next_build_number=int(data.get("nextBuildNumber") or 1),
            in_queue=bool(data.get("inQueue")),
        )

    # --- builds --------------------------------------------------------------------------------------------
    def build_job(self, name, parameters=None):
        """Queue a build; returns the queue item id (follow it with `queue_item`).

        The parameters travel as a form body (Jenkins reads buildWithParameters' parameters from the query or the
        body alike), never in the URL: python-jenkins' own build_job puts them in the query string, where the
        callback token would land in every access log between here and Jenkins.
        """
        values = {key: _param_value(value) for key, value in (parameters or {}).items()}
        return self._call(f"starting job {name}", self._post_build, name, values, missing=f"job {name}")

    def _post_build(self, name, values):
        url = urljoin(self.url, _job(name, "buildWithParameters" if values else "build"))
        response = self._server.jenkins_request(requests.Request("POST", url, data=values or None))
        location = response.headers.get("Location", "").rstrip("/")
        match = re.search(r"/queue/item/(\d+)$", location)
        if not match:
            raise IntegrationError(
                f"Jenkins at {self.url} queued job {name} but named no queue item (Location: {location!r}).",
                system=SYSTEM,
                code="bad_response",
            )
        return int(match.group(1))

    def queue_item(self, queue_id):
        data = self._call(
            f"reading queue item {queue_id}",
            self._get_json,
            f"queue/item/{int(queue_id)}/api/json",
            missing=f"queue item {queue_id} (Jenkins forgets queue items a few minutes after they start)",
        )
        executable = data.get("executable") or {}
        return QueueItem(
            id=int(data.get("id", queue_id)),
            job_name=(data.get("task") or {}).get("name"),
            build_number=executable.get("number"),
            build_url=executable.get("url"),
            cancelled=bool(data.get("cancelled")),
            why=data.get("why"),
        )

    def queued(self, name):
        """The job's items waiting in the queue (no build yet), with their parameters."""
        data = self._call("reading the build queue", self._get_json, "queue/api/json")
        return [
            QueueItem(
                id=int(entry["id"]),
                job_name=name,
                build_number=None,
                build_url=None,
                cancelled=bool(entry.get("cancelled")),
                why=entry.get("why"),
                parameters=_parameters(entry),
            )
            for entry in data.get("items") or ()
            if (entry.get("task") or {}).get("name") == name
        ]

    def builds(self, name, limit=20):
        """The newest `limit` builds of the job, newest first."""
        tree = f"builds[{BUILD_TREE}]{{0,{int(limit)}}}"
        data = self._call(
            f"listing the builds of job {name}",
            self._get_json,
            _job(name, "api/json"),
            {"tree": tree},
            missing=f"job {name}",
        )
        return [_build_info(name, entry) for entry in data.get("builds") or ()]

    def build(self, name, number):
        data = self._call(
            f"reading build #{number} of job {name}",
            self._get_json,
            _job(name, f"{int(number)}/api/json"),
            missing=f"build #{number} of job {name}",
        )
        return _build_info(name, data)

    def build_log(self, name, number):
        """The build's console text so far."""
        response = self._call(
            f"reading the log of build #{number} of job {name}",
            self._get,
            _job(name, f"{int(number)}/consoleText"),
            missing=f"build #{number} of job {name}",
        )
        response.encoding = response.encoding or "utf-8"
        return response.text

    def stop_build(self, name, number):
        self._call(
            f"stopping build #{number} of job {name}",
            self._server.stop_build,
            name,
            int(number),
            missing=f"build #{number} of job {name}",
        )


def _job(name, rest):
    return f"job/{quote(name, safe='')}/{rest}"


def _number(ref):
    return int(ref["number"]) if ref and ref.get("number") is not None else None


def _param_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _parameters(data):
    """The parameter values of a build or queue item (its ParametersAction)."""
    parameters = {}
    for action in data.get("actions") or ():
        for parameter in (action or {}).get("parameters") or ():
            parameters[parameter.get("name")] = parameter.get("value")
    return parameters


def _build_info(name, data):
    parameters = _parameters(data)
    timestamp = data.get("timestamp")
    return BuildInfo(
        job_name=name,
        number=int(data["number"]),
        result=data.get("result"),
        building=bool(data.get("building")),
        duration_ms=int(data.get("duration") or 0),
        timestamp=datetime.fromtimestamp(timestamp / 1000, tz=UTC) if timestamp else None,
        url=data.get("url", ""),
        parameters=parameters,
        queue_id=data.get("queueId"),
    )


def _same_xml(left, right):
    with contextlib.suppress(ET.ParseError, ValueError):
        return _canonical(left) == _canonical(right)
    return left == right


def _canonical(text):
    # The declaration is not content (Jenkins rewrites it as version 1.1); whitespace before it would not parse.
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
    return ET.canonicalize(text, strip_text=True)
