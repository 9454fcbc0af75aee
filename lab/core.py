"""The local lab: real programs and stand-ins started on free loopback ports, stopped by PID.

A lab lives in one run directory: `state.json` (what runs, with PIDs and addresses), `logs/` (one log per
process), `lab.env` (the portal's settings for this lab) and each component's own files. The monitoring host's
files (prometheus.yml, rule files, targets, alertmanager.yml) live under `host/`, which the lab's sshd serves.

Components are modules under `lab/components/`; each has `NAME`, `REQUIRES` (names started first) and
`start(lab) -> dict`. The dict is the component's info: addresses, paths, and an `env` dict of portal settings.
Nothing here imports Django: the lab runs from `python -m lab` and from pytest fixtures alike.
"""

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = ROOT / "var" / "lab"
CACHE_DIR = ROOT / "var" / "cache"
LOOPBACK = "127.0.0.1"

# Start order; `ensure` also starts a component's REQUIRES first.
COMPONENTS = ["metrics", "alertmanager", "prometheus", "sshd", "vcsim", "jenkins", "f5"]


class LabError(Exception):
    """The lab could not start or reach a component; the message says which and where its log is."""


def free_port(host=LOOPBACK):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class Lab:
    def __init__(self, run_dir=DEFAULT_RUN_DIR):
        self.run_dir = Path(run_dir).resolve()
        self.logs_dir = self.run_dir / "logs"
        self.host_dir = self.run_dir / "host"
        self.state_file = self.run_dir / "state.json"
        self.env_file = self.run_dir / "lab.env"
        self._children = {}
        self.state = self._load_state()

    # --- state ---------------------------------------------------------------------------------------------
    def _load_state(self):
        if self.state_file.is_file():
            with contextlib.suppress(ValueError):
                return json.loads(self.state_file.read_text())
        return {"components": {}}

    def _save_state(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)
        env = self.env()
        lines = [f"{key}={value}" for key, value in sorted(env.items())]
        self.env_file.write_text("\n".join(lines) + "\n")

    def info(self, name):
        """The info dict of a running component (starting it, with what it requires, when needed)."""
        return self.ensure(name)

    def env(self):
        """Portal settings (environment variables) that point at this lab."""
        # A portal that uses this lab has the demo app (seed_demo, simulate_load), e.g. in a second terminal.
        merged = {"DEMO_ENABLED": "true"}
        for name in COMPONENTS:
            merged.update(self.state["components"].get(name, {}).get("env", {}))
        return merged

    # --- processes -----------------------------------------------------------------------------------------
    def spawn(self, name, argv, *, env=None, cwd=None):
        """Start a long-running process in its own session, logging to logs/NAME.log; returns its PID."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.logs_dir / f"{name}.log", "ab")
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self._children[proc.pid] = proc
        return proc.pid

    def python_argv(self, module, *args):
        """argv that runs a module of this project with the current interpreter."""
        return [sys.executable, "-m", module, *args]

    def log_path(self, name):
        return self.logs_dir / f"{name}.log"

    def log_tail(self, name, lines=20):
        path = self.log_path(name)
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, name, url, *, pid=None, timeout=30.0, accept=lambda status: status < 500, headers=None):
        """Wait until URL answers with an accepted status; fail early when the process died."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if pid is not None and not pid_alive(pid):
                raise LabError(f"lab: {name} exited during start-up; see {self.log_path(name)}:\n{self.log_tail(name)}")
            request = urllib.request.Request(url, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if accept(response.status):
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                if accept(exc.code):
                    return
                last = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise LabError(f"lab: {name} did not answer {url} within {timeout:.0f}s ({last}); see {self.log_path(name)}")

    def wait_tcp(self, name, port, *, host=LOOPBACK, pid=None, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is not None and not pid_alive(pid):
                raise LabError(f"lab: {name} exited during start-up; see {self.log_path(name)}:\n{self.log_tail(name)}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
                return
            time.sleep(0.05)
        raise LabError(f"lab: {name} did not listen on {host}:{port} within {timeout:.0f}s; see {self.log_path(name)}")

    # --- components ----------------------------------------------------------------------------------------
    @staticmethod
    def component(name):
        if name not in COMPONENTS:
            raise LabError(f"lab: unknown component {name!r}; known: {', '.join(COMPONENTS)}")
        return importlib.import_module(f"lab.components.{name}")

    def running(self, name):
        info = self.state["components"].get(name)
        return bool(info) and all(pid_alive(pid) for pid in info.get("pids", []))

    def ensure(self, name):
        if self.running(name):
            return self.state["components"][name]
        module = self.component(name)
        for required in getattr(module, "REQUIRES", ()):
            self.ensure(required)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = module.start(self)
        self.state["components"][name] = info
        self._save_state()
        return info

    def up(self, names=None):
        for name in names or COMPONENTS:
            self.ensure(name)
        return self.state["components"]

    def status(self):
        """name -> (up?, detail) for every component."""
        result = {}
        for name in COMPONENTS:
            info = self.state["components"].get(name)
            if not info:
                result[name] = (False, "not started")
                continue
            dead = [pid for pid in info.get("pids", []) if not pid_alive(pid)]
            if dead:
                result[name] = (False, f"process {dead[0]} is gone; see {self.log_path(name)}")
                continue
            url = info.get("health_url")
            if url:
                try:
                    self.wait_http(name, url, timeout=2, headers=info.get("health_headers"))
                except LabError as exc:
                    result[name] = (False, str(exc))
                    continue
            result[name] = (True, info.get("summary", ""))
        return result

    def stop(self, names=None):
        names = list(reversed(names or COMPONENTS))
        pids = []
        for name in names:
            info = self.state["components"].pop(name, None)
            if info:
                pids.extend(info.get("pids", []))
                stop_hook = getattr(self.component(name), "stop", None)
                if stop_hook:
                    stop_hook(self, info)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in pids:
            while pid_alive(pid) and time.monotonic() < deadline:
                self._reap(pid)
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            self._reap(pid)
        if self.run_dir.is_dir():
            self._save_state()

    def _reap(self, pid):
        proc = self._children.get(pid)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)
