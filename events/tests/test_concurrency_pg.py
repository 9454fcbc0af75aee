"""Concurrent webhook deliveries on PostgreSQL: identical notifications make exactly one event.

Real concurrency needs a real database server: these tests skip on SQLite. They use the live test server (one
process, a thread per request, a database connection per thread) and two gunicorn processes on loopback pointed at
pytest-django's test database. The notifications are decided behind the answers: here by deciders started at the
same moment with the lock that keeps them to one at a time bypassed, so the config's row lock alone must keep every
notification decided once.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest
import requests
from django.core.cache import caches
from django.db import connection

from events import intake
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.tests.conftest import WEBHOOK_TOKEN, firing_payload
from lab.core import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL for real concurrency"),
    pytest.mark.django_db(transaction=True),
]


def send_all(urls_and_bodies):
    """POST every (url, body) at the same moment from its own thread; returns the status codes."""
    barrier = threading.Barrier(len(urls_and_bodies))

    def send(item):
        url, body = item
        with requests.Session() as session:
            barrier.wait(timeout=10)
            response = session.post(
                url,
                data=body,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
                timeout=30,
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=len(urls_and_bodies)) as pool:
        return list(pool.map(send, urls_and_bodies))


def decide_in_parallel(deciders=4):
    """Run `deciders` deciders at once, each in its own thread and connection, as if each had the decider's lock;
    returns how many notifications they decided together (each once: nothing waits after)."""
    barrier = threading.Barrier(deciders)

    def decide(_n):
        barrier.wait(timeout=10)
        return intake.notifications_decide()

    with mock.patch.object(type(caches["default"]), "add", return_value=True):
        with ThreadPoolExecutor(max_workers=deciders) as pool:
            decided = sum(pool.map(decide, range(deciders)))
    assert not AlertNotification.objects.filter(decided_at__isnull=True).exists()
    return decided


def test_twenty_identical_notifications_in_parallel_make_one_event(live_server, webhook_settings, make_config):
    make_config("web")
    body = json.dumps(firing_payload("web"))
    codes = send_all([(f"{live_server.url}/api/webhook/autoscale/web", body)] * 20)
    assert codes == [202] * 20
    assert AlertNotification.objects.count() == 20
    assert decide_in_parallel() == 20
    assert ScaleOutEvent.objects.count() == 1
    outcomes = list(ScalingDecision.objects.values_list("outcome", flat=True))
    assert sorted(outcomes) == ["duplicate"] * 19 + ["scale_out"]


def test_ten_services_in_parallel_make_ten_events(live_server, webhook_settings, make_config):
    services = [f"svc-{n}" for n in range(10)]
    for name in services:
        make_config(name)
    items = [
        (f"{live_server.url}/api/webhook/autoscale/{name}", json.dumps(firing_payload(name, fingerprint=f"{n:016x}")))
        for n, name in enumerate(services)
        for _copy in range(2)
    ]
    assert send_all(items) == [202] * 20
    assert decide_in_parallel() == 20
    assert sorted(ScaleOutEvent.objects.values_list("service_name", flat=True)) == sorted(services)


@pytest.fixture
def two_portals(webhook_settings):
    """Two gunicorn processes serving the portal from pytest-django's test database."""
    db = connection.settings_dict
    database_url = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {
        **os.environ,
        "LAB_ENV_FILE": "",
        "DATABASE_URL": database_url,
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "DJANGO_SETTINGS_MODULE": "vmautoscale.settings",
        "LOG_LEVEL": "WARNING",
    }
    processes, urls = [], []
    for _n in range(2):
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "vmautoscale.wsgi",
        ]
        processes.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for process, url in zip(processes, urls, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                try:
                    requests.get(f"{url}/admin/login/", timeout=5)
                    break
                except requests.RequestException:
                    assert time.monotonic() < deadline, "gunicorn did not start"
                    time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)  # gunicorn: quick shutdown
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_identical_notifications_through_two_portal_processes_make_one_event(two_portals, make_config):
    make_config("web")
    body = json.dumps(firing_payload("web"))
    items = [(f"{two_portals[n % 2]}/api/webhook/autoscale/web", body) for n in range(20)]
    assert send_all(items) == [202] * 20
    assert AlertNotification.objects.count() == 20
    assert decide_in_parallel() == 20
    assert ScaleOutEvent.objects.count() == 1
    assert ScalingDecision.objects.filter(outcome="duplicate").count() == 19


def test_parallel_scale_ins_never_choose_an_instance_twice_nor_cross_min(live_server, webhook_settings, make_config):
    from django.contrib.auth import get_user_model

    from fleet.models import ManagedInstance

    config = make_config(
        "web",
        scale_in_threshold=20,
        scale_in_cooldown_seconds=0,
        min_instances=2,
        max_instances=6,
        monitored_instances=[],
    )
    ManagedInstance.objects.bulk_create(
        ManagedInstance(config=config, state=ManagedInstance.State.IN_SERVICE, vm_name=f"web-{n}") for n in range(5)
    )
    labels = {"metric": "cpu", "direction": "in"}
    bodies = [
        json.dumps(firing_payload("web", alertname="AutoscaleLowCpu", fingerprint=f"{n:016x}", labels=labels))
        for n in range(10)
    ]
    codes = send_all([(f"{live_server.url}/api/webhook/autoscale/web", body) for body in bodies])
    assert codes == [202] * 10
    assert decide_in_parallel() == 10
    # 5 in service, min 2: three scale-ins, each of another instance; the other seven decisions say at min.
    chosen = list(ManagedInstance.objects.exclude(removed_by_event=None).values_list("removed_by_event", flat=True))
    assert len(chosen) == len(set(chosen)) == 3
    assert ScaleOutEvent.objects.filter(action="scale_in").count() == 3
    assert ScalingDecision.objects.filter(outcome="at_min").count() == 7

    # An operator's removals of one instance from many requests at once: one event.
    user = get_user_model().objects.create_superuser("ops", password="pw-ops-123")
    left = ManagedInstance.objects.filter(removed_by_event=None).first()
    ScaleOutEvent.objects.filter(action="scale_in").update(status=ScaleOutEvent.Status.SUCCEEDED)
    ManagedInstance.objects.exclude(removed_by_event=None).update(state=ManagedInstance.State.REMOVED)
    config.min_instances = 1
    config.save(update_fields=["min_instances"])

    def remove(_n):
        response = requests.post(
            f"{live_server.url}/api/autoscaling/instances/{left.pk}/remove", auth=("ops", "pw-ops-123"), timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(remove, range(8)))
    assert user.pk and codes == [201] + [409] * 7
    assert ManagedInstance.objects.get(pk=left.pk).removed_by_event.requested_by == user
