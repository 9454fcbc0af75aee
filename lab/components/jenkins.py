"""The Jenkins stand-in (lab/standins/jenkins.py) on a free loopback port, with a fresh API token per start.

`JenkinsStandinControl(info["control_url"])` drives its control API from tests (plain urllib, no Django).
Runner modules named in $LAB_JENKINS_RUNNER_MODULES (comma-separated) are imported by the stand-in at start.
"""

import json
import os
import secrets
import time
import urllib.error
import urllib.request

from lab.core import ROOT, free_port

NAME = "jenkins"
REQUIRES = ()
USER = "autoscale"


def start(lab):
    port = free_port()
    token = secrets.token_hex(16)
    workspace_root = lab.run_dir / "jenkins-workspace"
    argv = ["--port", str(port), "--user", USER, "--workspace-root", str(workspace_root)]
    for module in filter(None, os.environ.get("LAB_JENKINS_RUNNER_MODULES", "").split(",")):
        argv += ["--runner-module", module.strip()]
    argv = lab.python_argv("lab.standins.jenkins", *argv)
    pid = lab.spawn(NAME, argv, env={"JENKINS_STANDIN_TOKEN": token}, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    lab.wait_http(NAME, f"{url}_lab/health", pid=pid, timeout=15)
    return {
        "pids": [pid],
        "url": url,
        "control_url": url,
        "user": USER,
        "token": token,
        "workspace_root": str(workspace_root),
        "health_url": f"{url}_lab/health",
        "summary": f"Jenkins stand-in at {url} (user {USER})",
        "env": {"JENKINS_URL": url, "JENKINS_USER": USER, "JENKINS_TOKEN": token},
    }


class JenkinsStandinControl:
    """Test-side helper for the stand-in's /_lab/ control API."""

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/") + "/"

    def _call(self, method, path, data=None):
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.base_url + "_lab/" + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    # calls and faults
    def calls(self, *, path_contains=None, method=None):
        """Recorded protocol calls: dicts with method, path, params, status, note, body, headers, time, seq."""
        return [
            call
            for call in self._call("GET", "calls")
            if (path_contains is None or path_contains in call["path"]) and (method is None or call["method"] == method)
        ]

    def reset(self, *, everything=False):
        """Forget calls and faults; with everything=True also jobs, builds, queue and behaviour."""
        self._call("POST", "reset", {"scope": "all" if everything else "calls"})

    def fail_next(self, count=1, status=503, *, path=None, method=None):
        """The next `count` matching requests answer `status` (count=None: until clear_faults)."""
        spec = {"kind": "status", "status": status, "count": count, "path": path, "method": method}
        self._call("POST", "faults", spec)

    def delay_next(self, seconds, count=1, *, path=None, method=None, status=None):
        self._call(
            "POST",
            "faults",
            {"kind": "delay", "seconds": seconds, "count": count, "path": path, "method": method, "status": status},
        )

    def drop_next(self, count=1, *, path=None, method=None):
        """The next `count` matching requests get their connection closed without an answer."""
        self._call("POST", "faults", {"kind": "drop", "count": count, "path": path, "method": method})

    def clear_faults(self):
        self._call("DELETE", "faults")

    # builds
    def set_build_behaviour(self, *, job=None, reset=False, **behaviour):
        """runner, result, duration (None = until finish_build), log_lines, queue_delay, runner options."""
        return self._call("POST", "behaviour", {"job": job, "reset": reset, **behaviour})

    def set_build_result(self, result, *, duration=None, job=None):
        spec = {"result": result}
        if duration is not None:
            spec["duration"] = duration
        return self.set_build_behaviour(job=job, **spec)

    def jobs(self):
        return self._call("GET", "jobs")

    def job(self, name):
        return self._call("GET", f"jobs/{urllib.request.quote(name, safe='')}")

    def build(self, job, number):
        return self._call("GET", f"builds/{urllib.request.quote(job, safe='')}/{number}")

    def finish_build(self, job, number, result="SUCCESS"):
        self._call("POST", f"builds/{urllib.request.quote(job, safe='')}/{number}/finish", {"result": result})

    def wait_build(self, job, number, *, timeout=10.0):
        """The build once it has finished (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                build = self.build(job, number)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                build = None
            if build and not build["building"]:
                return build
            if time.monotonic() > deadline:
                raise AssertionError(f"build {job} #{number} did not finish within {timeout}s")
            time.sleep(0.05)
