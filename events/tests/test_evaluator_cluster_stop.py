"""A stopping task cluster does not wait for the evaluator's run: the run (up to RUN_SECONDS of one worker) ends at
once when the cluster stops, so `make run`'s Ctrl-C and a systemd stop (SIGTERM to the leader) end in seconds.

The test's cluster has a queue of its own (django-q2's Q_CLUSTER_NAME): the end-to-end tests' session cluster, on the
same test database, must neither take the test's task nor, through its every-minute schedule, start a newer
evaluator run that takes over the test's."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from events import evaluator
from events.models import EvaluatorState
from lab.core import group_members
from tests.e2e.conftest import _test_database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
# Far below the run's RUN_SECONDS (110 s without the stop check), with room for a loaded CI machine.
STOP_BUDGET = 20.0
QUEUE = f"vmautoscale-stop-test-{os.getpid()}"


@pytest.fixture
def cluster(tmp_path):
    env = {
        **os.environ,
        "LAB_ENV_FILE": "",
        "DATABASE_URL": _test_database_url(),
        "SECRET_KEY": settings.SECRET_KEY,  # the task's signature
        "Q_WORKERS": "2",
        "EVALUATOR_INTERVAL": "15",
        "LOG_LEVEL": "INFO",
        "Q_CLUSTER_NAME": QUEUE,
    }
    log = tmp_path / "qcluster.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log = log
    try:
        yield process
    finally:
        if group_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def no_scheduled_evaluator_run():
    """Hold off the every-minute evaluator run (of any other cluster on this database) while the test runs."""
    schedules = Schedule.objects.filter(func="events.tasks.evaluator_run")
    kept = list(schedules.values_list("pk", "next_run"))
    schedules.update(next_run=timezone.now() + timezone.timedelta(hours=1))
    yield
    for pk, next_run in kept:
        Schedule.objects.filter(pk=pk).update(next_run=next_run)


def test_a_stopping_cluster_ends_the_evaluator_run_within_seconds(no_scheduled_evaluator_run, cluster):
    wait_for("the cluster to run", lambda: "running" in cluster.log.read_text(), timeout=60)
    async_task("events.tasks.evaluator_run", task_name="evaluator-stop-test", cluster=QUEUE)
    # The test cluster's worker runs it (it takes the ownership as it starts).
    wait_for("the evaluator run to start", lambda: "processing evaluator-stop-test" in cluster.log.read_text())
    wait_for("the run to own the evaluator", lambda: EvaluatorState.objects.filter(owner__gt="").exists())
    time.sleep(1.0)  # now in its run of RUN_SECONDS: making a pass, or waiting for its next tick up to 15 s away

    started = time.monotonic()
    os.kill(cluster.pid, signal.SIGTERM)  # as `make run` and systemd (KillMode=mixed) stop it: the leader only
    wait_for("the cluster to exit", lambda: not group_members(cluster.pid), timeout=evaluator.RUN_SECONDS + 30)
    took = time.monotonic() - started
    out = cluster.log.read_text()
    assert took < STOP_BUDGET, f"the cluster took {took:.1f}s to stop:\n{out[-3000:]}"
    assert "the task cluster is stopping" in out, out[-3000:]
    print(f"\nqcluster stopped {took:.1f}s after SIGTERM, an evaluator run active")
