"""The Jenkins stand-in (lab/standins/jenkins.py) on a free loopback port, with a fresh API token per start.

`JenkinsStandinControl(info["control_url"])` drives its control API from tests (plain urllib, no Django).
Runner modules named in $LAB_JENKINS_RUNNER_MODULES (comma-separated) are imported by the stand-in at start.
"""

import os
import secrets
import time
import urllib.error
import urllib.request

from lab.components.control import StandinControl
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


class JenkinsStandinControl(StandinControl):
    """Test-side helper for the stand-in's /_lab/ control API."""

    def set_build_behaviour(self, *, job=None, reset=False, **behaviour):
        """runner, result, duration (None = until finish_build), log_lines, queue_delay, runner options."""
        return self._call("POST", "behaviour", {"job": job, "reset": reset, **behaviour})

    def set_build_result(self, result, *, duration=None, job=None):
        spec = {"result": result}
        if duration is not None:
            spec["duration"] = duration
        return self.set_build_behaviour(job=job, **spec)

    def add_secret_text(self, credential_id, secret):
        """A "Secret text" credential, as a Generic Webhook Trigger's tokenCredentialId names it."""
        return self._call("POST", "credentials", {"id": credential_id, "secret": secret})

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
