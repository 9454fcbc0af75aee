"""The callback token never appears on a command line of the lab's Jenkins agent: every process the pipeline starts
(sh, the step commands, curl) is read from /proc while real builds run, the agent-check path with curl included."""

import threading
from pathlib import Path

import pytest

from events.models import ScaleOutEvent

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


class ProcessList:
    """Every command line on the machine, sampled from /proc as fast as it can until stopped."""

    def __init__(self):
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self):
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        raw = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue  # the process ended meanwhile
                    if raw:
                        self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))


def token_of(pipeline, event):
    return pipeline.jenkins.build(event.jenkins_job, event.build_number)["parameters"]["CALLBACK_TOKEN"]


def test_no_command_line_of_a_scale_out_carries_the_callback_token(pipeline):
    with ProcessList() as processes:
        event = pipeline.run()
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, pipeline.console(event))
    token = token_of(pipeline, event)
    assert token
    # The sampling saw the pipeline's own commands (so it would have seen the token too).
    steps = [line for line in processes.seen if "-m pipeline step" in line]
    assert any("ip_allocate" in line for line in steps) and any("vm_clone" in line for line in steps)
    assert not [line for line in processes.seen if token in line]


def test_the_agent_check_reports_with_curl_without_the_token_on_its_command_line(pipeline, tmp_path):
    with ProcessList() as processes:
        event = pipeline.run(behaviour={"env": {"PORTAL_HOME": str(tmp_path / "missing")}})
    assert event.status == ScaleOutEvent.Status.FAILED, (event.status, pipeline.console(event))
    assert "PORTAL_HOME" in event.error  # the curl report reached the portal with the token
    token = token_of(pipeline, event)
    assert not [line for line in processes.seen if token in line]
