"""Fixtures for the templates app: the lab's vCenter simulator, scratch VMs in it, vCenter made unreachable."""

import socket
import threading
import uuid

import pytest
from django_q.conf import Conf

from integrations.errors import IntegrationError
from integrations.vcenter import VcenterClient


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """admin_client's user is created per test: skip the deliberately slow production hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def vcsim(lab_settings, settings, monkeypatch):
    """Django settings pointed at the lab's vCenter simulator; queued tasks run in-process.

    django-q2 reads Q_CLUSTER["sync"] once, at import, into Conf.SYNC (which async_task and its worker consult at
    call time), so the test switches that instead of the setting.
    """
    lab_settings("vcsim")
    monkeypatch.setattr(Conf, "SYNC", True)
    return settings


@pytest.fixture
def vc(lab):
    """A client of our own, to prepare and inspect the simulator's inventory."""
    info = lab.info("vcsim")
    with VcenterClient(info["url"], info["user"], info["password"], verify_tls=False) as client:
        yield client


@pytest.fixture(scope="session")
def scratch_template(lab):
    info = lab.info("vcsim")
    with VcenterClient(info["url"], info["user"], info["password"], verify_tls=False) as client:
        source = client.find_vm("DC0_C0_RP0_VM1")
        return client.clone_to_template(source.moid, name=unique("tt-base"))


@pytest.fixture
def scratch_vm(vc, scratch_template):
    """Make VMs nobody else uses: scratch_vm(powered_on=False) -> VirtualMachineInfo. Destroyed afterwards."""
    made = []

    def make(*, powered_on=False):
        vm = vc.clone_from_template(scratch_template.moid, name=unique("tt-vm"), resource_pool="DC0_C0")
        if powered_on:
            vc.power_on(vm.moid)
        made.append(vm.moid)
        return vc.get_vm(vm.moid)

    yield make
    for moid in made:
        try:
            vm = vc.get_vm(moid)
        except IntegrationError:
            continue  # the test deleted it
        if vm.is_template:
            vc.delete_template(moid)
        else:
            vc.destroy_vm(moid)


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hung_port():
    """A loopback port that accepts connections and never answers, like a hung vCenter."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()
