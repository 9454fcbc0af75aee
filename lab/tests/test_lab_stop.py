"""`python -m lab down` stops every process the run dir's labs spawned, with a deadline, and never a stranger's."""

import signal
import subprocess
import sys
import time

from lab.core import Lab, group_members

STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)\n"
# A process group whose leader exits at once and leaves a child behind (like a daemon's workers).
ORPHAN = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)'])\n"


def test_stop_kills_helpers_stubborn_processes_and_orphaned_groups_within_the_grace(tmp_path):
    lab = Lab(tmp_path / "lab")
    helper = lab.spawn("helper", [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
    stubborn = lab.spawn("stubborn", [sys.executable, "-c", STUBBORN])
    orphaned = lab.spawn("orphaned", [sys.executable, "-c", ORPHAN])
    time.sleep(1.0)  # the stubborn one has installed its handler, the orphaned group's leader has exited
    assert group_members(orphaned)

    # Another Lab object on the same run dir (as `python -m lab down` in a second process) finds them all.
    started = time.monotonic()
    stopped = Lab(tmp_path / "lab").stop(grace=1.0)
    took = time.monotonic() - started

    assert {(name, pid) for name, pid, _how in stopped} == {
        ("helper", helper),
        ("stubborn", stubborn),
        ("orphaned", orphaned),
    }
    assert dict((name, how) for name, _pid, how in stopped)["stubborn"] == "killed"
    assert not any(group_members(pid) for pid in (helper, stubborn, orphaned))
    assert took < 4
    assert not (lab.run_dir / "spawned.pids").exists()


def test_a_reused_pid_is_left_alone(tmp_path):
    lab = Lab(tmp_path / "lab")
    stranger = subprocess.Popen([sys.executable, "-c", "import time\ntime.sleep(30)"], start_new_session=True)
    try:
        lab.run_dir.mkdir(parents=True)
        # The stranger got a PID an earlier lab process had: its start time differs from the recorded one.
        (lab.run_dir / "spawned.pids").write_text(f"{stranger.pid} 1 old-helper\n")
        assert lab.stop() == []
        assert stranger.poll() is None
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()
