"""The whole loop against the session lab: real Prometheus, Alertmanager, sshd, the vCenter simulator, the Jenkins
and F5 stand-ins, the portal on pytest-django's live server, and its tasks run by a real `manage.py qcluster` on the
test database (PostgreSQL, or SQLite's test database file).

Each test seeds its own service through demo/services.py (the code `make run` uses) in its own /24 of the session's
own loopback /17 (lab/networks.py): the metrics stand-in's VMs listen on port 9100, which every lab on this machine
shares.
"""

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.db import OperationalError, transaction
from django.utils import timezone

from autoscaling import services as autoscaling_services
from autoscaling.models import AutoscalingConfig
from demo import services as demo
from demo import wiring
from events import evaluator
from events.models import AlertNotification, EvaluatorState, ScaleOutEvent
from fleet.models import ManagedInstance
from lab import wiring as lab_wiring
from lab.core import COMPONENTS, ROOT, pid_alive
from lab.payloads import firing_notification
from lab.standins.metrics import random_loopback_network

_numbers = itertools.count(1)
EVALUATOR_TASK = "events.tasks.evaluator_run"
FINISHED = ScaleOutEvent.FINAL_STATUSES


def wait_for(what, check, *, timeout=30.0, interval=0.1):
    """check()'s first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OperationalError as exc:
            # SQLite's shared in-memory test database: a table another connection writes is locked for an instant.
            if "locked" not in str(exc):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _group_alive(pgid):
    """True while a process of the group still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _kill(pid, grace=3.0):
    """Stop a process started with lab.spawn and everything in its process group (e.g. qcluster's workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.fixture(scope="session")
def e2e_network():
    """This session's e2e VMs live in a /17 of the session's own loopback block (lab/networks.py: no other process
    on the machine uses it); every test takes a /24 of it."""
    return random_loopback_network(prefixlen=17)


@pytest.fixture(scope="session")
def e2e_lab(lab, e2e_network):
    """Every lab component, and the VM agent that boots the node exporters of new VMs in the session's network."""
    lab.up(COMPONENTS)
    pid = lab_wiring.vm_agent_ensure(lab, networks=[str(e2e_network)])
    yield lab
    _kill(pid)


def _test_database_url():
    from django.db import connection

    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"  # the test database's file (vmautoscale/config.py: never in memory)
    parts = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class PortalProcess:
    """One of the portal's own processes (the task cluster, a web server) on the test database, in its own process
    group (lab.spawn): started, stopped as an operator would (SIGTERM to the leader), killed outright (SIGKILL to the
    whole group, as a crash or the OOM killer does), and started again."""

    def __init__(self, lab, name, argv, env, ready=None):
        self.lab, self.name, self.argv, self.env, self.ready = lab, name, argv, env, ready
        self.pid = None

    def start(self, **env):
        """Start (again), with `env` on top of the process's environment for this start only."""
        self.pid = self.lab.spawn(self.name, self.argv, env={**self.env, **env}, cwd=ROOT)
        if self.ready:
            self.ready(self)
        else:
            time.sleep(1.0)
        assert pid_alive(self.pid), self.lab.log_tail(self.name)
        return self.pid

    def alive(self):
        return self.pid is not None and _group_alive(self.pid)

    def kill(self):
        """SIGKILL to every process of the group; returns once they are all gone."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        wait_for(f"{self.name} to die", lambda: not _group_alive(self.pid), timeout=10, interval=0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)
        self.pid = None

    def stop(self):
        if self.pid is not None:
            _kill(self.pid)
            self.pid = None


def portal_env(lab, portal_url, **extra):
    """The environment of a portal process of this test session: the lab's settings, the test database."""
    from django.conf import settings

    return {
        **lab.env(),
        # What both processes render must match: the job's trigger token derives from SECRET_KEY.
        "SECRET_KEY": settings.SECRET_KEY,
        "WEBHOOK_TOKEN": settings.WEBHOOK_TOKEN,
        "DATABASE_URL": _test_database_url(),
        "LAB_ENV_FILE": str(lab.env_file),
        "PORTAL_URL": portal_url,
        "Q_WORKERS": "4",
        "EVENT_TRIGGER_BACKOFF": "0.1",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def task_cluster(lab, env, name="qcluster-e2e"):
    return PortalProcess(lab, name, [sys.executable, "manage.py", "qcluster"], env)


def web_server(lab, env, port, name="gunicorn-e2e"):
    """gunicorn serving the portal, as production (and `make run`) serves it."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "60",
        "--access-logfile",
        "-",
        "vmautoscale.wsgi:application",
    ]

    def ready(process):
        lab.wait_http(name, f"http://127.0.0.1:{port}/admin/login/", pid=process.pid, timeout=60)

    return PortalProcess(lab, name, argv, env, ready=ready)


@pytest.fixture(scope="session")
def _pg_sessions_ended(live_server, django_db_setup, django_db_blocker):
    """At the session's end (not before: later tests still use the live server's threads), the PostgreSQL sessions
    the live server's threads left (Alertmanager kept calling until the end) are ended, or they would keep the test
    database from being dropped."""
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="package")
def qcluster(e2e_lab, live_server, django_db_setup, django_db_blocker, _pg_sessions_ended):
    """A real task cluster (`manage.py qcluster`) on the test database, as `make run` and production run one.

    It lives as long as the e2e tests: left running, it would take the tasks later tests queue on the same database
    (a provisioning pass with its own settings, pushed over the one a test just made)."""
    with django_db_blocker.unblock():
        # The lab's settings explicitly: this process's environment may hold another lab's (settings.py loads
        # var/lab/lab.env into it), and real environment variables win over LAB_ENV_FILE.
        cluster = task_cluster(e2e_lab, portal_env(e2e_lab, live_server.url))
    cluster.start()
    yield cluster
    cluster.stop()


class E2E:
    """The test's handle on the loop: seed services, load them, post to the webhook, read every system's state."""

    def __init__(self, lab, live_server, settings, network, cluster):
        from common.clients import vcenter_client
        from lab.components.f5 import F5StandinControl
        from lab.components.jenkins import JenkinsStandinControl

        self.lab = lab
        self.url = live_server.url
        self.settings = settings
        self.network = network
        self.cluster = cluster
        self.metrics = wiring.lab_metrics(lab)
        self.f5 = F5StandinControl(lab.info("f5")["control_url"])
        self.jenkins = JenkinsStandinControl(lab.info("jenkins")["control_url"])
        self.vcenter = vcenter_client()
        self.prometheus_url = lab.info("prometheus")["url"]
        self.alertmanager = lab.info("alertmanager")
        self.plans = []

    @property
    def cluster_pid(self):
        return self.cluster.pid if self.cluster is not None else None

    # --- seeding ------------------------------------------------------------------------------------------------
    def plan(self, **fields):
        n = next(_numbers)
        subnets = list(self.network.subnets(new_prefix=24))
        subnet = subnets[n % len(subnets)]
        service = f"e2e{n}-{uuid.uuid4().hex[:6]}"
        plan = demo.DemoPlan(service=service, network=str(subnet), **fields)
        self.plans.append(plan)
        return plan

    def seed(self, plan=None, **fields):
        plan = plan or self.plan(**fields)
        result = demo.demo_seed(lab=self.lab, plan=plan, start_vm_agent=False)
        assert result.run is not None and result.run.status in ("changed", "unchanged"), result.run.error
        return result

    def load(self, plan, percent):
        return demo.demo_load_set(lab=self.lab, service=plan.service, percent=percent)

    # --- the portal ---------------------------------------------------------------------------------------------
    def post_webhook(self, service, body, *, token=None):
        """POST to the webhook as Alertmanager does (bearer token, JSON body)."""
        headers = {"Authorization": f"Bearer {token or self.settings.WEBHOOK_TOKEN}"}
        return requests.post(f"{self.url}/api/webhook/autoscale/{service}", json=body, headers=headers, timeout=30)

    def wait_decided(self, timeout=60.0):
        """Wait until the decider has decided every stored notification (it runs behind the webhook's answers)."""
        wait_for(
            "every notification to be decided",
            lambda: not AlertNotification.objects.filter(decided_at__isnull=True).exists(),
            timeout=timeout,
        )

    def events(self, plan):
        return list(ScaleOutEvent.objects.filter(service_name=plan.service).order_by("id"))

    def wait_event(self, plan, *, index=0, finished=True, timeout=60.0):
        def check():
            events = self.events(plan)
            if len(events) <= index:
                return None
            event = events[index]
            return event if (event.status in FINISHED or not finished) else None

        try:
            event = wait_for(f"event #{index + 1} of {plan.service}", check, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{self.diagnose(plan)}") from None
        if finished and event.build_number:
            wait_for(
                "the build to end",
                lambda: not self.jenkins.build(event.jenkins_job, event.build_number)["building"],
                timeout=30,
            )
        return event

    def console(self, event):
        event.refresh_from_db()
        if not event.build_number:
            return "(no build)"
        return self.jenkins.build(event.jenkins_job, event.build_number)["console"]

    def diagnose(self, plan):
        from events.models import ScalingDecision

        decisions = list(ScalingDecision.objects.filter(service_name=plan.service).values_list("outcome", "reason"))
        events = [(e.pk, e.status, e.error) for e in self.events(plan)]
        return (
            f"service {plan.service}: decisions {decisions}; events {events}; alerts {self.prometheus_alerts(plan)}; "
            f"load {self.metrics.state()['services'].get(plan.service)}"
        )

    # --- the monitoring host ------------------------------------------------------------------------------------
    def prometheus(self, path, **params):
        response = requests.get(f"{self.prometheus_url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]

    def prometheus_rule(self, plan):
        for group in self.prometheus("/api/v1/rules")["groups"]:
            for rule in group["rules"]:
                if rule.get("labels", {}).get("service") == plan.service:
                    return rule
        return None

    def prometheus_alerts(self, plan, state=None):
        alerts = self.prometheus("/api/v1/alerts")["alerts"]
        return [
            a
            for a in alerts
            if a["labels"].get("service") == plan.service and (state is None or a.get("state") == state)
        ]

    def scrape_targets(self, plan):
        active = self.prometheus("/api/v1/targets", state="active")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active if t["labels"].get("service") == plan.service}

    def amtool_route(self, **labels):
        info = self.alertmanager
        argv = [info["amtool"], "config", "routes", "test", f"--config.file={info['config_file']}"]
        argv += [f"{key}={value}" for key, value in labels.items()]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    def vms(self, plan):
        prefix = f"{plan.service}-"
        return {vm.name: vm for vm in self.vcenter.list_vms() if vm.name.startswith(prefix) and not vm.is_template}

    def f5_members(self, plan):
        return self.f5.members(plan.f5_pool)

    def wait_tasks_done(self, timeout=40.0):
        """Wait until the task cluster has nothing queued or running (a task's queue row goes when it is done), but
        the evaluator's run, which never is: it evaluates for minutes, and the next run takes over."""
        if self.cluster_pid is None:
            return
        from django_q.models import OrmQ

        def idle():
            return all(queued.func() == EVALUATOR_TASK for queued in OrmQ.objects.all())

        wait_for("the task cluster to finish its tasks", idle, timeout=timeout)

    # --- clean-up -----------------------------------------------------------------------------------------------
    def cleanup(self):
        """Take this test's services off the shared host and Jenkins, and its VMs out of the metrics stand-in."""
        for plan in self.plans:
            with contextlib.suppress(Exception):
                self.load(plan, 0)
        # Disabled first: the evaluator (running in the task cluster) then leaves them alone, even once their
        # events, whose cooldowns held it back, are gone.
        AutoscalingConfig.objects.update(enabled=False)
        with contextlib.suppress(AssertionError):  # what the test left waiting (the decider may have failed too)
            self.wait_decided(timeout=15)
        with transaction.atomic():
            # The configs locked first, as the decider locks them: a round under way commits what it decided (rows
            # that point at the configs) before these deletions collect what points at them.
            list(AutoscalingConfig.objects.select_for_update().values_list("pk", flat=True))
            ScaleOutEvent.objects.all().delete()
            ManagedInstance.objects.all().delete()
            AutoscalingConfig.objects.all().delete()
        self.wait_tasks_done()
        autoscaling_services.provisioning_run(reason="e2e clean-up", wait=60)
        # The database is emptied after the test: a pass still running then would act on a stale view of it.
        self.wait_tasks_done()
        self.f5.configure(address_states={})
        services = {plan.service for plan in self.plans}
        for vm in self.metrics.state()["vms"]:
            if vm["service"] in services:
                self.metrics.unregister_vm(vm["address"])
        self.vcenter.close()


def firing_payload(service, *, fingerprint=None, starts_at=None, value="95"):
    """A version-4 Alertmanager notification for one firing alert of `service` (shaped like the real captures)."""
    return firing_notification(
        service,
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
        starts_at=starts_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        alertname="AutoscaleHighCpu",
        labels={"metric": "cpu"},
        annotations={"summary": f"{service}: CPU above 70%", "value": value},
    )


@pytest.fixture
def e2e(e2e_lab, lab_settings, live_server, settings, e2e_network, qcluster):
    # The session's VM agent, again if a test's seed_demo replaced it with one of its own (lab/wiring.py keeps one).
    lab_wiring.vm_agent_ensure(e2e_lab, networks=[str(e2e_network)])
    lab_settings(*COMPONENTS)
    settings.PORTAL_URL = live_server.url
    settings.EVENT_TRIGGER_BACKOFF = 0.1
    handle = E2E(e2e_lab, live_server, settings, e2e_network, qcluster)
    yield handle
    handle.cleanup()


def waiting(e2e, plan, what, check, *, timeout):
    """wait_for, with evaluator passes run by the test when no task cluster runs them."""
    if e2e.cluster_pid is None:
        inner = check

        def check():
            evaluator.evaluator_pass()
            return inner()

    try:
        return wait_for(what, check, timeout=timeout, interval=0.5 if e2e.cluster_pid else 1.0)
    except AssertionError as exc:
        state = EvaluatorState.objects.first()
        evaluated = state and (state.last_pass_at, state.last_summary, state.last_error)
        raise AssertionError(f"{exc}: {e2e.diagnose(plan)}; evaluator {evaluated}") from None


@pytest.fixture
def schedules(e2e):
    """The evaluator scheduled in the task cluster (an earlier test's flush emptied the schedule table), and the
    fleet reconcile not: this test is about the decisions alone (the reconcile has its tests in fleet/tests, and
    leaves the demo's adopted VMs, which live in the metrics stand-in only, alone)."""
    if e2e.cluster_pid is None:
        yield
        return
    from django_q.models import Schedule

    Schedule.objects.filter(func="fleet.tasks.fleet_reconcile").delete()
    Schedule.objects.update_or_create(
        func="events.tasks.evaluator_run",
        defaults={"name": "e2e evaluator", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
    # The scheduler looks every 30 s: wait for the evaluator's first pass.
    wait_for(
        "the evaluator to run",
        lambda: EvaluatorState.objects.filter(last_pass_at__gte=timezone.now() - timedelta(seconds=20)).exists(),
        timeout=60,
    )
    yield
