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
# LAB_RUN_DIR moves `make run`'s lab (and what seed_demo / simulate_load use by default), e.g. for a second one.
DEFAULT_RUN_DIR = Path(os.environ.get("LAB_RUN_DIR") or ROOT / "var" / "lab")
# Every process `Lab.spawn` starts is listed here (one "pid start-time name" line) the moment it starts, so
# `stop()` finds them all: a component interrupted during its start, or a helper such as the demo's VM agent.
SPAWNED_FILE = "spawned.pids"
STOP_GRACE = 5.0
# Starts of a component whose free port another process took in the meantime (see Lab.ensure).
PORT_ATTEMPTS = 3
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


def _stat_fields(pid):
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]; None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid):
    """The process's start time (clock ticks since boot): with the PID, it names one process, never a reused PID."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def group_members(pgid):
    """PIDs of the live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


def stop_groups(groups, *, grace=STOP_GRACE, reap=lambda pid: None):
    """Stop process groups: one SIGTERM to each, then SIGKILL to whatever of a group is left after `grace` seconds.

    `groups` maps a group id (the PID of its leader, started in its own session) to a name. Returns
    {pgid: "stopped" | "killed" | "gone"}.
    """
    result = {}
    for pgid in groups:
        if not group_members(pgid):
            result[pgid] = "gone"
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        result[pgid] = "stopped"
    deadline = time.monotonic() + grace
    waiting = [pgid for pgid, how in result.items() if how == "stopped"]
    while waiting and time.monotonic() < deadline:
        for pgid in waiting:
            reap(pgid)
        waiting = [pgid for pgid in waiting if group_members(pgid)]
        time.sleep(0.05)
    for pgid in waiting:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        result[pgid] = "killed"
    kill_deadline = time.monotonic() + 2
    while any(group_members(pgid) for pgid in waiting) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    for pgid in result:
        reap(pgid)
    return result


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
        # Appended, not rewritten: several Lab objects (python -m lab, manage.py seed_demo) may share a run dir.
        with open(self.run_dir / SPAWNED_FILE, "a") as spawned:
            spawned.write(f"{proc.pid} {start_time(proc.pid) or '-'} {name}\n")
        return proc.pid

    def spawned(self):
        """{pid: name} of the processes this run dir's labs spawned that still run (a reused PID is not ours)."""
        found = {}
        with contextlib.suppress(OSError):
            for line in (self.run_dir / SPAWNED_FILE).read_text().splitlines():
                parts = line.split()
                if len(parts) < 3 or not parts[0].isdigit():
                    continue
                pid, started, name = int(parts[0]), parts[1], parts[2]
                now = start_time(pid)
                # The leader gone but its group alive (e.g. sshd's children) still counts: Linux never reuses a
                # PID that is a live process group's id.
                if (now == started) or (now is None and group_members(pid)):
                    found[pid] = name
        return found

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
        for attempt in range(1, PORT_ATTEMPTS + 1):
            started = set(self._children)
            try:
                info = module.start(self)
                break
            except LabError as exc:
                # free_port() gives a port that is free NOW; another test session on the machine may take it before
                # the component binds it. Then the component starts again on other free ports.
                taken = "address already in use" in f"{exc}\n{self.log_tail(name)}".lower()
                if not taken or attempt == PORT_ATTEMPTS:
                    raise
                stop_groups({pid: name for pid in set(self._children) - started}, grace=1, reap=self._reap)
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

    def stop(self, names=None, *, grace=STOP_GRACE):
        """Stop components (default: all, and every other process this run dir's labs spawned).

        One SIGTERM to each process group, SIGKILL to what is left after `grace` seconds. Returns
        [(name, pid, "stopped" | "killed")] of the processes that were running.
        """
        everything = names is None
        names = list(reversed(names or COMPONENTS))
        groups = {}
        for name in names:
            info = self.state["components"].pop(name, None)
            if info:
                groups.update({pid: name for pid in info.get("pids", [])})
                stop_hook = getattr(self.component(name), "stop", None)
                if stop_hook:
                    stop_hook(self, info)
        if everything:
            for pid, name in self.spawned().items():
                groups.setdefault(pid, name)
        result = stop_groups(groups, grace=grace, reap=self._reap)
        if everything:
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / SPAWNED_FILE).unlink()
        if self.run_dir.is_dir():
            self._save_state()
        return [(groups[pid], pid, how) for pid, how in result.items() if how != "gone"]

    def _reap(self, pid):
        proc = self._children.get(pid)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)
