"""`make run` (scripts/run-dev.sh) for real: it serves, scales out, stops every process it started within 15 s of ONE
Ctrl-C on a busy machine, and a restart finds its data and its demo again: the simulator has forgotten the clone,
the first reconcile marks it lost, and the demo scales out again (issue 13's must-show).

The run has its own lab (LAB_RUN_DIR under the test's temp dir, every port free, the demo in a random loopback /24)
and its own SQLite database, so it collides neither with the test session's lab nor with a developer's `make run`.
Ctrl-C is what a terminal does: SIGINT to the run's process group. Its processes are found three ways: a marker in
their environment (every child inherits it), the run's directory in their command line, and the PIDs it recorded.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from lab.core import free_port
from lab.standins.metrics import random_loopback_network

pytestmark = [
    pytest.mark.lab,
    pytest.mark.make_run,
    pytest.mark.timeout(480),
    # `make run` runs on its own SQLite database whatever the session's: the SQLite session runs this once.
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="make run uses its own SQLite database; run by the SQLite session",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
STOP_BUDGET = 15.0
USER, PASSWORD = "make-run-admin", "make-run-Passw0rd!"


def _environ(pid):
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/environ").read_bytes()
    return b""


def _cmdline(pid):
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    return b""


def _stat(pid):
    """(state, pgid, start time) of a process, None when it is gone."""
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2]), fields[19]
    return None


def _live():
    """{pid: (state, pgid, start time)} of every live, non-zombie process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            stat = _stat(int(entry.name))
            if stat and stat[0] != "Z":
                found[int(entry.name)] = stat
    return found


def processes_of(marker, run_dir, recorded=(), known=None):
    """{(pid, start time): command line} of every live process of the run.

    Its processes carry the marker in their environment or the run's directory in their command line. Before the
    stop, `recorded` (the PIDs the run wrote down, alive now, so ours) and their process groups count too; after
    it, `known` (that snapshot) is compared by PID *and* start time, so a PID reused by a stranger never counts.
    """
    needle, path = f"MAKE_RUN_TEST={marker}".encode(), str(run_dir).encode()
    live = _live()
    groups = {pid for pid in recorded if pid in live}
    found = {}
    for pid, (_state, pgid, started) in live.items():
        cmdline = _cmdline(pid)
        ours = needle in _environ(pid).split(b"\0") or path in cmdline or pid in groups or pgid in groups
        if ours or (known is not None and (pid, started) in known):
            found[(pid, started)] = cmdline.decode(errors="replace").strip()
    return found


def recorded_pids(lab_dir):
    pids = set()
    for name in ("spawned.pids", "run-dev.pids"):
        with contextlib.suppress(OSError):
            for line in (lab_dir / name).read_text().splitlines():
                if line.split() and line.split()[0].isdigit():
                    pids.add(int(line.split()[0]))
    return pids


class Run:
    """One `make run` in its own process group, as a terminal starts it."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.lab_dir = tmp_path / "lab"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker = uuid.uuid4().hex
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PORT": str(self.port),
            "LAB_RUN_DIR": str(self.lab_dir),
            "LAB_ENV_FILE": str(self.lab_dir / "lab.env"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "SECRET_KEY": "make-run-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "WEBHOOK_TOKEN": "make-run-test-webhook-token",
            "DJANGO_SUPERUSER_USERNAME": USER,
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
            "DEMO_NETWORK": str(random_loopback_network()),
            "MAKE_RUN_TEST": self.marker,
        }
        self.proc = None
        self.log = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log = self.tmp / f"run-{self.starts}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["scripts/run-dev.sh"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self):
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout=150):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"make run exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=3).status_code == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"/healthz not 200 within {timeout}s:\n{self.output()[-3000:]}")

    def api(self, method, path, **kwargs):
        response = requests.request(method, f"{self.url}/api/{path}", auth=(USER, PASSWORD), timeout=20, **kwargs)
        return response

    def manage(self, *args):
        """A manage.py command in the run's environment (as a developer types it beside `make run`)."""
        result = subprocess.run(
            [".venv/bin/python", "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def processes(self, recorded=(), known=None):
        return processes_of(self.marker, self.tmp, recorded, known)

    def ctrl_c(self):
        """One SIGINT to the run's process group; returns (seconds until all is gone, before, what was left)."""
        before = self.processes(recorded_pids(self.lab_dir))
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        left = before
        while time.monotonic() - started < STOP_BUDGET:
            self.proc.poll()
            left = self.processes(known=before)
            if not left and self.proc.returncode is not None:
                break
            time.sleep(0.1)
        return time.monotonic() - started, before, left

    def kill_everything(self):
        for pid, _started in self.processes():  # marker or run dir only: never a stranger with a reused PID
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def busy_machine(seconds):
    """Two CPU burners per core, each stopping by itself after `seconds` at the latest."""
    burn = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def wait_event_final(run, event_id, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = run.api("GET", f"autoscaling/events/{event_id}").json()
        if event["status"] in ("succeeded", "failed", "rolled_back", "cancelled"):
            return event
        time.sleep(0.5)
    raise AssertionError(f"event {event_id} not finished within {timeout}s: {event}\n{run.output()[-3000:]}")


def wait_instance_lost(run, vm_name, timeout=120):
    """The instance of `vm_name` once it has left service for good: the fleet reconcile (queued as the task cluster
    starts, then every minute) marks it lost, unless the evaluator (which resumes at the start) scaled the idle
    demo in first, through a scale-in that found the VM gone ("removed")."""
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = run.api("GET", "autoscaling/instances", params={"service": "demo-web"}).json()["results"]
        for row in rows:
            if row["vm_name"] == vm_name and row["state"] in ("lost", "removed"):
                return row
        time.sleep(1.0)
    raise AssertionError(f"{vm_name} not lost within {timeout}s: {rows}\n{run.output()[-3000:]}")


def wait_new_event(run, *, after, action="scale_out", timeout=120):
    """The first `action` event of demo-web newer than event `after`, once it has finished. (After a restart that
    took long, on a loaded machine, the idle demo may have scaled in first: that event is not the one awaited.)"""
    deadline = time.monotonic() + timeout
    newer = []
    while time.monotonic() < deadline:
        rows = run.api("GET", "autoscaling/events", params={"service": "demo-web"}).json()["results"]
        newer = sorted((r for r in rows if r["id"] > after and r["action"] == action), key=lambda r: r["id"])
        if newer:
            return wait_event_final(run, newer[0]["id"], timeout=max(deadline - time.monotonic(), 30))
        time.sleep(1.0)
    raise AssertionError(f"no new event of demo-web within {timeout}s\n{run.output()[-3000:]}")


def test_make_run_stops_everything_on_one_ctrl_c_and_restarts_with_its_data(tmp_path):
    run = Run(tmp_path)
    try:
        run.start()
        run.wait_healthy()
        assert "Demo service demo-web" in run.output(), run.output()[-3000:]
        assert "Starting gunicorn" in run.output()
        # gunicorn serves no static files itself: the admin's CSS comes from Django while DEBUG is on.
        assert requests.get(f"{run.url}/static/admin/css/base.css", timeout=10).status_code == 200

        created = run.api("POST", "autoscaling/events", json={"service_name": "demo-web", "reason": "make run test"})
        assert created.status_code == 201, created.text
        event = wait_event_final(run, created.json()["id"])
        assert event["status"] == "succeeded", event

        with busy_machine(seconds=STOP_BUDGET + 10):
            took, before, left = run.ctrl_c()
        commands = " ".join(before.values())
        for program in ("gunicorn", "qcluster", "prometheus", "alertmanager", "sshd", "lab.standins.vm_agent"):
            assert program in commands, f"{program} was not running: {before}"
        assert not left, f"{len(left)} processes left {took:.1f}s after one Ctrl-C: {left}"
        assert took < STOP_BUDGET
        out = run.output()
        stopped = re.search(r"^Stopped: (.*)$", out, re.MULTILINE)
        assert stopped, out[-3000:]
        for name in ("task cluster", "web server", "vm-agent", "prometheus", "vcsim"):
            assert name in stopped.group(1)
        print(f"\nmake run: {len(before)} processes, all gone {took:.1f}s after one Ctrl-C on a busy machine")

        # The restart finds its lab directory, its database and its demo.
        run.start()
        run.wait_healthy()
        again = run.api("GET", f"autoscaling/events/{event['id']}")
        assert again.status_code == 200 and again.json()["status"] == "succeeded", again.text
        configs = run.api("GET", "autoscaling/configs", params={"search": "demo-web"}).json()["results"]
        assert [c["service_name"] for c in configs] == ["demo-web"] and configs[0]["enabled"]
        assert "Demo service demo-web" in run.output(), run.output()[-3000:]
        assert run.env["DEMO_NETWORK"].rsplit(".", 1)[0] in run.output()

        # The restarted simulator has forgotten the clone: the first reconcile marks its instance lost (its IP
        # free), and a new load scales the demo out again, through the real alert, to a succeeded event.
        restarted = time.monotonic()
        (clone,) = event["vm_names"]
        lost = wait_instance_lost(run, clone)
        reconciled = time.monotonic() - restarted
        assert lost["state"] == "lost" or lost["removed_by_event"], lost
        run.manage("simulate_load", "demo-web", "170", "--run-dir", str(run.lab_dir))
        again = wait_new_event(run, after=event["id"])
        assert again["status"] == "succeeded" and again["source"] == "alert", again
        assert again["vm_names"], again
        made = run.api("GET", "autoscaling/instances", params={"created_by_event": again["id"]}).json()["results"]
        assert [row["state"] for row in made] == ["in_service"], made
        run.manage("simulate_load", "demo-web", "0", "--run-dir", str(run.lab_dir))
        print(
            f"make run restarted: the forgotten clone lost {reconciled:.0f}s after the start, the demo scaled again "
            f"{time.monotonic() - restarted:.0f}s after it"
        )

        # This time the task cluster has work in hand (a provisioning pass over SSH) when Ctrl-C comes.
        assert run.api("POST", "autoscaling/sync", json={}).status_code == 202
        with busy_machine(seconds=STOP_BUDGET + 10):
            took, before, left = run.ctrl_c()
        assert not left, f"{len(left)} processes left {took:.1f}s after the second run's Ctrl-C: {left}"
        print(f"make run (restarted, a pass queued): all gone {took:.1f}s after one Ctrl-C")
    finally:
        run.kill_everything()
