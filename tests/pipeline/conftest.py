"""Fixtures of the pipeline tests: a template, a config with an IP pool, a scale-out event with a callback token."""

import contextlib
import http.client
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from autoscaling.models import AutoscalingConfig, IpPool
from events import status
from events.models import EventAction, ScaleOutEvent
from lab.standins.metrics import random_loopback_network
from templates_app.models import VMTemplate

Step = EventAction.Step
# The steps a scale-out reports, in order, and its undo in reverse (what the Jenkinsfile and pipeline/ must do).
FORWARD = [
    Step.IP_ALLOCATE,
    Step.VM_CLONE,
    Step.VM_CUSTOMIZE,
    Step.VM_POWER_ON,
    Step.VM_GUEST_IP,
    Step.F5_ADD,
    Step.HEALTH_CHECK,
]
UNDO = [Step.ROLLBACK_F5, Step.ROLLBACK_VM, Step.ROLLBACK_IP]
# A scale-in's steps, in order, and its undo.
SCALE_IN = [
    Step.F5_DISABLE,
    Step.F5_DRAIN,
    Step.F5_OFFLINE,
    Step.F5_REMOVE,
    Step.VM_SHUTDOWN,
    Step.VM_DESTROY,
    Step.IP_RELEASE,
    Step.MONITORING_REMOVE,
]
SCALE_IN_UNDO = [Step.ROLLBACK_F5_ENABLE]

ROOT = Path(__file__).resolve().parents[2]
GET_IP = ROOT / "scripts" / "get-available-ip.py"
_names = itertools.count(1)


def issue_callback_token(event):
    """A callback token for the event, issued the way the portal issues one for a Jenkins build."""
    token = secrets.token_urlsafe(32)
    event.callback_token_hash = status.callback_token_hash(token)
    event.save(update_fields=["callback_token_hash"])
    return token


class PipelineNetwork:
    """The session's pipeline addresses: a loopback /24 that no other process on this machine uses (lab/networks.py),
    so two sessions side by side (CI's SQLite and PostgreSQL suites) never share an address, whatever listens there
    one day. `ip(10)` is its address .10; `prefix` its first three octets ("127.x.y")."""

    def __init__(self, network):
        self.network = ipaddress.IPv4Network(str(network))
        self.prefix = str(self.network.network_address).rsplit(".", 1)[0]

    def ip(self, n):
        return str(self.network.network_address + n)

    def __str__(self):
        return str(self.network)


@pytest.fixture(scope="session")
def pipeline_network():
    return PipelineNetwork(random_loopback_network())


@pytest.fixture
def ip(pipeline_network):
    """ip(n): address .n of the session's pipeline network."""
    return pipeline_network.ip


@pytest.fixture
def make_pool(db, pipeline_network):
    """make_pool(first=ip(10), last=ip(20), **fields): an IP pool in the session's pipeline network."""
    ip = pipeline_network.ip

    def make(first=None, last=None, **fields):
        n = next(_names)
        fields.setdefault("ping_check", False)
        return IpPool.objects.create(
            name=f"pool-{os.getpid()}-{n}",
            network=str(pipeline_network),
            first_address=first or ip(10),
            last_address=last or ip(20),
            gateway=fields.pop("gateway", ip(1)),
            dns_servers=fields.pop("dns_servers", [ip(2)]),
            **fields,
        )

    return make


@pytest.fixture
def make_event(db, make_pool):
    """make_event(pool=None, template="...", vm_count=1, **config fields) -> (event, callback token)."""

    def make(pool=None, template="DC0_H0_VM0", vm_count=1, **config_fields):
        n = next(_names)
        template_row, _created = VMTemplate.objects.get_or_create(
            name=template, defaults={"status": VMTemplate.Status.READY}
        )
        config = AutoscalingConfig.objects.create(
            service_name=f"svc{n}-{os.getpid() % 10000}",
            template=template_row,
            enabled=True,
            ip_pool=pool if pool is not None else make_pool(),
            **config_fields,
        )
        event = ScaleOutEvent.objects.create(
            config=config, service_name=config.service_name, status=ScaleOutEvent.Status.TRIGGERED, vm_count=vm_count
        )
        return event, issue_callback_token(event)

    return make


def skip_on_in_memory_sqlite():
    """Concurrency needs one database connection per request; the live server shares one in-memory SQLite
    connection between its request threads, so concurrent requests there would interfere (CI runs PostgreSQL)."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("concurrent requests need a real database server: run with DATABASE_URL=postgres://...")


def run_get_ip(*args, env=None, timeout=30):
    """Run scripts/get-available-ip.py as a Jenkins agent would: its own process, the checkout on PYTHONPATH (as the
    Jenkinsfile sets it), no Django."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CALLBACK_URL", "EVENT_ID", "CALLBACK_TOKEN")}
    clean.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(GET_IP), *args],
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def portal_env(live_server, event, token):
    return {
        "CALLBACK_URL": f"{live_server.url}/api/events/{event.pk}/callback",
        "EVENT_ID": str(event.pk),
        "CALLBACK_TOKEN": token,
    }


@pytest.fixture(scope="session")
def ping_namespace(pipeline_network):
    """A network namespace in which only the pipeline network's .10 answers a ping (everything else in 127/8 does
    not).

    On the host every 127.x address answers, so the "address answers -> skip it" path needs a namespace.
    Yields the ping command prefix to use; skips when namespaces cannot be created here.
    """
    ip = shutil.which("ip")
    if ip is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"vmas-pl-{os.getpid()}"
    setup = [
        [ip, "netns", "add", name],
        [ip, "-n", name, "link", "set", "lo", "up"],
        [ip, "-n", name, "addr", "del", "127.0.0.1/8", "dev", "lo"],
        [ip, "-n", name, "addr", "add", f"{pipeline_network.ip(10)}/32", "dev", "lo"],
    ]
    for argv in setup:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run([ip, "netns", "del", name], capture_output=True)
            pytest.skip(f"cannot set up a network namespace: {' '.join(argv)}: {result.stderr.strip()}")
    yield f"{ip} netns exec {name} ping"
    with contextlib.suppress(OSError):
        subprocess.run([ip, "netns", "del", name], capture_output=True)


class _Dropping:
    """`drop_next(n)`: the next n connections (or requests) are dropped; `dropped` counts them."""

    def __init__(self):
        self.drop = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def drop_next(self, count):
        with self.lock:
            self.drop = count

    def _dropping(self):
        with self.lock:
            if self.drop <= 0:
                return False
            self.drop -= 1
            self.dropped += 1
            return True


class TcpProxy(_Dropping):
    """A loopback TCP proxy in front of a real server (the simulator, this portal) that can drop the next
    connections: the network failing for one step of a build, and working again for the next."""

    def __init__(self, port, host="127.0.0.1"):
        super().__init__()
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            if self._dropping():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()


class PortalProxy(_Dropping):
    """This portal behind a loopback HTTP proxy (the builds' CALLBACK_URL, see the `portal_proxy` fixture).

    `hold_before(step)`: the step's command is held in its "running" report, before the step does anything, until
    `release()`, so a test can change what the step will meet (a fault, a VM gone) at exactly that point, whichever
    stage (and which command of several steps) runs it. `drop_next(n)`: the next n requests (the held one first)
    are read and left unanswered, the connection closed: the portal unreachable for one step."""

    def __init__(self, target_url):
        super().__init__()
        parts = urlsplit(target_url)
        self.target = (parts.hostname, parts.port)
        self.holding = None
        self.held = threading.Event()
        self.released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                proxy._handle(self)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold_before(self, step):
        self.held.clear()
        self.released.clear()
        self.holding = step

    def wait_held(self, timeout=60):
        if not self.held.wait(timeout):
            raise AssertionError(f"step {self.holding} never reported that it runs")

    def release(self):
        self.released.set()

    def _handle(self, request):
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if self.holding and request.command == "POST" and request.path.endswith("/step"):
            report = json.loads(body or b"{}")
            if report.get("step") == self.holding and report.get("status") == "running":
                self.holding = None
                self.held.set()
                self.released.wait(60)
        if self._dropping():
            request.close_connection = True
            return
        upstream = http.client.HTTPConnection(*self.target, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(request.command, request.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        request.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "content-length", "date", "server", "transfer-encoding"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- the pipeline through the lab's Jenkins stand-in ---------------------------------------------------------
# Short timeouts: the failure cases wait for them.
AGENT_ENV = {"GUEST_IP_TIMEOUT": "1.5", "F5_HEALTH_TIMEOUT": "20", "VM_TASK_TIMEOUT": "60", "POLL_INTERVAL": "0.1"}
TEMPLATE = f"pipeline-template-{os.getpid()}"


def vcenter_client(lab):
    from integrations.vcenter import VcenterClient

    info = lab.info("vcsim")
    return VcenterClient(info["url"], info["env"]["VCENTER_USER"], info["env"]["VCENTER_PASSWORD"], verify_tls=False)


@pytest.fixture(scope="session")
def pipeline_template(lab):
    """A template in the simulator, cloned once from one of its VMs."""
    with vcenter_client(lab) as client:
        if client.find_vm(TEMPLATE) is None:
            source = client.find_vm("DC0_H0_VM0")
            client.clone_to_template(source.moid, name=TEMPLATE)
    yield TEMPLATE
    # The simulator is shared by the whole test session: leave its inventory as other tests expect it.
    with vcenter_client(lab) as client:
        template = client.find_vm(TEMPLATE)
        if template is not None:
            client.delete_template(template.moid)


class Pipeline:
    """Runs scale-outs of fresh services through the portal's trigger and the Jenkins stand-in's pipeline runner."""

    def __init__(self, lab, make_pool, monkeypatch=None):
        from lab.components.f5 import F5StandinControl
        from lab.components.jenkins import JenkinsStandinControl

        self.lab = lab
        self.make_pool = make_pool
        self.vcenter = vcenter_client(lab)
        self.f5 = F5StandinControl(lab.info("f5")["control_url"])
        self.jenkins = JenkinsStandinControl(lab.info("jenkins")["control_url"])
        self.services = []
        self.pools = []
        self.monkeypatch = monkeypatch

    def config(self, *, pool=None, template=TEMPLATE, **fields):
        n = next(_names)
        service = f"pl{n}-{os.getpid() % 100000}"
        self.services.append(service)
        template_row, _created = VMTemplate.objects.get_or_create(
            name=template, defaults={"status": VMTemplate.Status.READY}
        )
        f5_pool = f"pool_{service.replace('-', '_')}"
        self.f5.create_pool(f5_pool)
        fields = {"cluster": "DC0_C0", "f5_pool": f5_pool, "f5_member_port": 8080, **fields}
        self.pools.append(fields["f5_pool"])
        return AutoscalingConfig.objects.create(
            service_name=service,
            template=template_row,
            enabled=True,
            ip_pool=pool if pool is not None else self.make_pool(),
            **fields,
        )

    def start(self, *, config=None, behaviour=None, vm_count=1, **config_fields):
        """Create the service's job (as provisioning renders it), an event, and trigger it as the portal does."""
        from autoscaling import rendering
        from autoscaling.provisioning import inputs
        from common.clients import jenkins_client
        from events.trigger import event_trigger
        from lab.standins.pipeline_runner import lab_behaviour

        config = config or self.config(**config_fields)
        job = config.jenkins_job_name
        xml = rendering.job_xml(inputs.service_spec(config), inputs.render_context())
        jenkins_client().create_or_update_job(job, xml)
        behaviour = dict(behaviour or {})
        env = {**AGENT_ENV, **behaviour.pop("env", {})}
        self.jenkins.set_build_behaviour(job=job, reset=True, **lab_behaviour(self.lab, env=env, **behaviour))
        event = ScaleOutEvent.objects.create(
            config=config, service_name=config.service_name, status=ScaleOutEvent.Status.PENDING, vm_count=vm_count
        )
        event_trigger(event_id=event.pk)
        event.refresh_from_db()
        assert event.status != ScaleOutEvent.Status.FAILED, event.error
        return event

    def scale_out(self, **kwargs):
        """A service with one instance in service, added by a real scale-out: (config, instance)."""
        from fleet.models import ManagedInstance

        event = self.run(**kwargs)
        assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, self.console(event))
        instance = ManagedInstance.objects.get(created_by_event=event)
        assert instance.state == ManagedInstance.State.IN_SERVICE
        return event.config, instance

    def start_scale_in(self, config, instances, *, behaviour=None, drain_timeout=None):
        """A scale-in event that removes `instances` (as the decision records one), triggered as the portal does."""
        from events.trigger import event_trigger
        from fleet.models import ManagedInstance
        from lab.standins.pipeline_runner import lab_behaviour

        if drain_timeout is not None:
            self.drain_timeout(config, drain_timeout)
        behaviour = dict(behaviour or {})
        env = {**AGENT_ENV, **behaviour.pop("env", {})}
        self.jenkins.set_build_behaviour(
            job=config.jenkins_job_name, reset=True, **lab_behaviour(self.lab, env=env, **behaviour)
        )
        event = ScaleOutEvent.objects.create(
            config=config,
            service_name=config.service_name,
            action=ScaleOutEvent.Action.SCALE_IN,
            status=ScaleOutEvent.Status.PENDING,
            vm_count=len(instances),
        )
        ManagedInstance.objects.filter(pk__in=[i.pk for i in instances]).update(removed_by_event=event)
        event_trigger(event_id=event.pk)
        event.refresh_from_db()
        assert event.status != ScaleOutEvent.Status.FAILED, event.error
        return event

    def drain_timeout(self, config, seconds):
        """The config's drain timeout, which the trigger sends as DRAIN_TIMEOUT (a build parameter)."""
        if any(field.name == "drain_timeout_seconds" for field in AutoscalingConfig._meta.get_fields()):
            AutoscalingConfig.objects.filter(pk=config.pk).update(drain_timeout_seconds=seconds)
        else:  # the config field comes with the scale-in decision; until then the trigger reads it with getattr
            self.monkeypatch.setattr(AutoscalingConfig, "drain_timeout_seconds", seconds, raising=False)

    def scale_in(self, config, instances, *, during=None, **kwargs):
        return self.wait(self.start_scale_in(config, instances, **kwargs), during=during)

    def wait(self, event, *, during=None, timeout=90):
        if during is not None:
            during(event)
        deadline = time.monotonic() + timeout
        while True:
            event.refresh_from_db()
            if event.is_finished and (not event.build_number or not self._building(event)):
                return event
            if time.monotonic() > deadline:
                raise AssertionError(f"event {event.pk} still {event.status}:\n{self.console(event)}")
            time.sleep(0.1)

    def run(self, *, during=None, **kwargs):
        return self.wait(self.start(**kwargs), during=during)

    def clean_up(self):
        """Destroy the VMs the test's scale-outs left in the shared simulator, and remove the members (and their
        nodes) they left in the shared F5 stand-in: a later test's member on the same address must own its node."""
        from common.clients import f5_client
        from integrations.errors import IntegrationError

        prefixes = tuple(f"{service}-" for service in self.services)
        for vm in self.vcenter.list_vms():
            if vm.name.startswith(prefixes) and not vm.is_template:
                self.vcenter.destroy_vm(vm.moid, power_off=True)
        f5 = f5_client()
        for pool in filter(None, self.pools):
            try:
                members = f5.list_members(pool)
            except IntegrationError as error:
                if error.code != "not_found":
                    raise
                continue
            for member in members:
                f5.remove_member(pool, member.partition, member.address, member.port, delete_node=True)

    def _building(self, event):
        return self.jenkins.build(event.jenkins_job, event.build_number)["building"]

    def console(self, event):
        event.refresh_from_db()
        if not event.build_number:
            return "(no build)"
        return self.jenkins.build(event.jenkins_job, event.build_number)["console"]

    def _wait_for(self, what, check, timeout=30):
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def hide_guest_ip(self, portal, event):
        """While the build is held before the guest-IP step (`portal`: the PortalProxy), make the guest report no
        address (as a VM whose network or VMware Tools did not come up), then let the build go on."""
        from pyVim.connect import Disconnect, SmartConnect
        from pyVmomi import vim

        portal.wait_held()
        vm = self.vcenter.find_vm(f"{event.service_name}-001")
        info = self.lab.info("vcsim")
        si = SmartConnect(
            host=info["host"],
            port=info["port"],
            user=info["env"]["VCENTER_USER"],
            pwd=info["env"]["VCENTER_PASSWORD"],
            disableSslCertValidation=True,
        )
        try:
            spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress", value="")])
            vim.VirtualMachine(vm.moid, si._stub).ReconfigVM_Task(spec=spec)
        finally:
            Disconnect(si)
        self._wait_for("the guest IP to vanish", lambda: self.vcenter.get_vm(vm.moid).ip_address == "")
        portal.release()

    def abort_during_health_check(self, event):
        """Stop the build (as an operator pressing abort in Jenkins) while it waits for the F5 member."""
        from common.clients import jenkins_client

        def health_check_running():
            return EventAction.objects.filter(
                event=event, step=EventAction.Step.HEALTH_CHECK, status=EventAction.Status.RUNNING
            ).exists()

        self._wait_for("the health check", health_check_running)
        pool = event.config.f5_pool

        def polling_member_state():  # the command is in its wait loop, not still starting
            return any(pool in call["path"] and call["path"].endswith("/stats") for call in self.f5.calls())

        self._wait_for("the health check to poll the F5", polling_member_state)
        event.refresh_from_db()
        jenkins_client().stop_build(event.jenkins_job, event.build_number)


@pytest.fixture
def pipeline(lab, lab_settings, live_server, make_pool, pipeline_template, settings, monkeypatch):
    lab_settings("jenkins", "vcsim", "f5")
    settings.PORTAL_URL = live_server.url
    settings.EVENT_TRIGGER_BACKOFF = 0.1
    runner = Pipeline(lab, make_pool, monkeypatch)
    yield runner
    runner.f5.configure(address_states={})
    runner.clean_up()
    runner.vcenter.close()


@pytest.fixture
def portal_proxy(pipeline, live_server, settings):
    """This portal behind a PortalProxy: the builds' CALLBACK_URL (and the jobs' portal URL) point at it."""
    proxy = PortalProxy(live_server.url)
    settings.PORTAL_URL = proxy.url
    yield proxy
    proxy.close()
