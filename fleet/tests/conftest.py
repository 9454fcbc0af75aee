"""Fixtures of the reconcile tests: a vCenter simulator of the fleet tests' own (so no other test's VMs carry
ownership markers that could name one of these tests' instances), the lab's F5 stand-in, and a service whose
instances have a VM, an IP allocation and a pool member."""

import contextlib
import itertools
import os
import signal
import time
import uuid

import pytest

from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
from fleet.models import ManagedInstance
from integrations.f5 import F5Client
from integrations.vcenter import VcenterClient
from lab.components import vcsim
from lab.components.f5 import F5StandinControl
from lab.core import pid_alive
from templates_app.models import VMTemplate

PARTITION = "Common"
PORT = 8080
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def fleet_vcsim(lab):
    info = vcsim.launch(lab, name="vcsim-fleet")
    yield info
    pid = info["pids"][0]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        lab._reap(pid)
        time.sleep(0.05)


@pytest.fixture(scope="session")
def vc(fleet_vcsim):
    with VcenterClient(
        fleet_vcsim["url"], fleet_vcsim["user"], fleet_vcsim["password"], verify_tls=False, timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="session")
def base_template(vc):
    return vc.clone_to_template(vc.find_vm("DC0_H0_VM0").moid, name="fleet-base")


@pytest.fixture
def fleet_settings(lab, lab_settings, fleet_vcsim):
    settings = lab_settings("f5")
    for key, value in fleet_vcsim["env"].items():
        setattr(settings, key, value == "true" if value in ("true", "false") else value)
    settings.FLEET_UNHEALTHY_GRACE = 120
    settings.FLEET_LOST_GRACE = 900
    return settings


@pytest.fixture
def f5(lab, fleet_settings):
    """The F5 stand-in's control API; members are up as soon as they are added."""
    control = F5StandinControl(lab.info("f5")["control_url"])
    control.configure(up_delay=0.0, default_state="up", address_states={}, refuse_login=False)
    yield control
    control.clear_faults()
    control.configure(up_delay=0.5, default_state="up", address_states={}, refuse_login=False)


@pytest.fixture
def f5_api(lab, f5):
    info = lab.info("f5")
    with F5Client(info["url"], info["user"], info["password"], verify_tls=False, timeout=5) as client:
        yield client


@pytest.fixture
def service(db, f5, f5_api):
    """A config with an IP pool and an F5 pool of its own (the stand-in is shared by the test session)."""
    n = next(_numbers)
    third = 100 + (os.getpid() + n) % 100
    ip_pool = IpPool.objects.create(
        name=f"fleet-{uuid.uuid4().hex[:8]}",
        network=f"127.0.{third}.0/24",
        first_address=f"127.0.{third}.10",
        last_address=f"127.0.{third}.60",
        gateway=f"127.0.{third}.1",
        ping_check=False,
    )
    template, _created = VMTemplate.objects.get_or_create(name="fleet-base", defaults={"status": "ready"})
    pool = f"fleet_{uuid.uuid4().hex[:8]}"
    f5.create_pool(pool)
    return AutoscalingConfig.objects.create(
        service_name=f"fleet{n}-{uuid.uuid4().hex[:4]}",
        template=template,
        enabled=False,
        min_instances=1,
        max_instances=4,
        ip_pool=ip_pool,
        f5_pool=pool,
        f5_partition=PARTITION,
        f5_member_port=PORT,
    )


@pytest.fixture
def make_instance(vc, base_template, f5_api):
    """make_instance(config, vm=True, member=True, state=in_service, **fields): an instance with (by default) a
    marked, powered-on VM in the simulator, an IP allocation in use and an up member in the config's F5 pool."""
    made = []

    def make(config, *, vm=True, member=True, state=ManagedInstance.State.IN_SERVICE, **fields):
        n = next(_numbers)
        address = fields.pop("ip_address", None) or next(
            a for a in config.ip_pool.usable_addresses() if not IpAllocation.objects.filter(address=a).exists()
        )
        name = fields.pop("vm_name", f"{config.service_name}-{n:03d}")
        allocation = IpAllocation.objects.create(
            pool=config.ip_pool, address=address, state=IpAllocation.State.IN_USE, vm_name=name
        )
        instance = ManagedInstance.objects.create(
            config=config,
            state=state,
            vm_name=name,
            ip_address=address,
            ip_allocation=allocation,
            f5_member=f"{address}:{PORT}" if member else "",
            health=ManagedInstance.Health.HEALTHY,
            **fields,
        )
        if vm:
            created = vc.clone_from_template(base_template.moid, name=name, resource_pool="DC0_C0")
            vc.power_on(created.moid)
            vc.set_custom_value(created.moid, instance.pk)
            made.append(created.moid)
            instance.vm_moid = created.moid
        if member:
            f5_api.add_member(config.f5_pool, PARTITION, address, PORT)
        return instance

    yield make
    for moid in made:
        vc.destroy_vm(moid)
