"""The inventory through the real pipeline: every VM a scale-out creates is a ManagedInstance, recorded before its
clone, marked in vCenter with its id (the ownership custom attribute), and moved along by the pipeline's callbacks."""

import os
import signal
import time

import pytest

from autoscaling.models import IpAllocation
from events.models import ScaleOutEvent
from fleet.models import ManagedInstance
from fleet.selectors import config_fleet_counts
from integrations.vcenter import OWNERSHIP_FIELD

State = ManagedInstance.State
pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def history(instance):
    return list(instance.history.order_by("at", "pk").values_list("from_state", "to_state"))


def ownership_marker(lab_vcsim, vm_name):
    """The VM's ownership custom attribute, read back with pyvmomi (the PropertyCollector, as the portal reads)."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl

    si = SmartConnect(
        host=lab_vcsim["host"],
        port=lab_vcsim["port"],
        user=lab_vcsim["env"]["VCENTER_USER"],
        pwd=lab_vcsim["env"]["VCENTER_PASSWORD"],
        disableSslCertValidation=True,
    )
    try:
        content = si.RetrieveContent()
        keys = {f.key: f.name for f in content.customFieldsManager.field}
        vm = content.searchIndex.FindByInventoryPath(f"DC0/vm/{vm_name}")
        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=vm)],
            propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=["customValue"])],
        )
        result = content.propertyCollector.RetrievePropertiesEx(specSet=[spec], options=collector.RetrieveOptions())
        values = result.objects[0].propSet[0].val if result.objects[0].propSet else []
        return {keys[v.key]: v.value for v in values}
    finally:
        Disconnect(si)


def test_a_scale_out_leaves_one_in_service_instance_marked_in_vcenter(pipeline, lab, ip):
    event = pipeline.run()
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, pipeline.console(event))
    instance = ManagedInstance.objects.get(created_by_event=event)
    vm = pipeline.vcenter.find_vm(f"{event.service_name}-001")
    allocation = IpAllocation.objects.get(pool=event.config.ip_pool, address=ip(10))
    assert instance.state == State.IN_SERVICE and instance.in_service_at is not None
    assert instance.origin == ManagedInstance.Origin.CREATED and instance.config == event.config
    assert (instance.vm_name, instance.vcenter_uuid) == (vm.name, vm.instance_uuid) and vm.instance_uuid
    assert (instance.ip_address, instance.ip_allocation) == (ip(10), allocation)
    assert instance.f5_member == f"{ip(10)}:8080" and instance.template == event.config.template
    assert history(instance) == [
        ("", State.PENDING),
        (State.PENDING, State.PROVISIONING),
        (State.PROVISIONING, State.IN_SERVICE),
    ]
    assert ownership_marker(lab.info("vcsim"), vm.name) == {OWNERSHIP_FIELD: str(instance.pk)}
    counts = config_fleet_counts(config=event.config)
    assert (counts.in_service, counts.creating) == (1, 0)


def test_a_clone_failure_leaves_the_instance_failed_then_removed_and_not_counted(pipeline):
    event = pipeline.run(datastore="NoSuchDatastore")
    assert event.status == ScaleOutEvent.Status.ROLLED_BACK, (event.error, pipeline.console(event))
    instance = ManagedInstance.objects.get(created_by_event=event)
    assert instance.state == State.REMOVED and instance.removed_at is not None
    assert history(instance) == [("", State.PENDING), (State.PENDING, State.FAILED), (State.FAILED, State.REMOVED)]
    failed, removed = instance.history.order_by("at", "pk")[1:]
    assert "vm_clone" in failed.reason and "no datastore" in failed.reason
    assert "rollback_vm" in removed.reason
    assert config_fleet_counts(config=event.config).counted == 0


@pytest.fixture
def slow_vcsim(lab):
    """A second simulator whose clones take 4 s, so a test can stop the pipeline in the middle of one."""
    from lab.components import vcsim

    # The lab's credentials: the pipeline's withCredentials binds them for whichever vCenter VCENTER_URL names.
    credentials = lab.info("vcsim")["env"]
    info = vcsim.launch(
        lab,
        name="vcsim-slow-clone",
        user=credentials["VCENTER_USER"],
        password=credentials["VCENTER_PASSWORD"],
        method_delays={"CloneVM_Task": 4000},
    )
    yield info
    for pid in info["pids"]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_the_instance_exists_before_its_vm_so_a_crash_mid_clone_leaves_a_record(pipeline, slow_vcsim):
    from common.clients import jenkins_client
    from integrations.vcenter import VcenterClient

    slow = VcenterClient(slow_vcsim["url"], slow_vcsim["user"], slow_vcsim["password"], verify_tls=False)
    with slow:
        slow.clone_to_template(slow.find_vm("DC0_H0_VM0").moid, name=pipeline.config().template.name)
    config = pipeline.config()
    seen = {}

    def stop_mid_clone(event):
        deadline = time.monotonic() + 30
        while not ManagedInstance.objects.filter(created_by_event=event).exists():
            assert time.monotonic() < deadline, pipeline.console(event)
            time.sleep(0.05)
        instance = ManagedInstance.objects.get(created_by_event=event)
        with VcenterClient(slow_vcsim["url"], slow_vcsim["user"], slow_vcsim["password"], verify_tls=False) as c:
            seen["vm"] = c.find_vm(f"{config.service_name}-001")
        seen["state"] = instance.state
        event.refresh_from_db()
        jenkins_client().stop_build(event.jenkins_job, event.build_number)

    event = pipeline.run(config=config, behaviour={"env": {"VCENTER_URL": slow_vcsim["url"]}}, during=stop_mid_clone)
    assert seen == {"vm": None, "state": State.PENDING}  # the row, not yet the VM
    assert event.status in (ScaleOutEvent.Status.ROLLED_BACK, ScaleOutEvent.Status.FAILED), pipeline.console(event)
    instance = ManagedInstance.objects.get(created_by_event=event)
    assert history(instance)[:2] == [("", State.PENDING), (State.PENDING, State.FAILED)]
    assert instance.state in (State.FAILED, State.REMOVED)
    assert config_fleet_counts(config=config).counted == 0
