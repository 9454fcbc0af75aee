"""VcenterClient.set_custom_value against the lab's vCenter simulator: the field is defined once, values are set
per VM and overwritten, read back with pyvmomi."""

import uuid

import pytest

from integrations.vcenter import VcenterClient

pytestmark = pytest.mark.lab


@pytest.fixture
def vcsim(lab):
    return lab.info("vcsim")


@pytest.fixture
def client(vcsim):
    with VcenterClient(vcsim["url"], vcsim["user"], vcsim["password"], verify_tls=False, timeout=10) as client:
        yield client


@pytest.fixture
def two_vms(client):
    suffix = uuid.uuid4().hex[:8]
    template = client.clone_to_template(client.find_vm("DC0_C0_RP0_VM0").moid, name=f"cv-base-{suffix}")
    vms = [client.clone_from_template(template.moid, name=f"cv-vm{n}-{suffix}", resource_pool="DC0_C0") for n in (1, 2)]
    yield vms
    for vm in vms:
        client.destroy_vm(vm.moid)
    client.delete_template(template.moid)


def read_back(vcsim, field, vms):
    """{VM name: value} of the custom field `field` on `vms`, and how many fields have that name."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    si = SmartConnect(
        host=vcsim["host"], port=vcsim["port"], user=vcsim["user"], pwd=vcsim["password"], disableSslCertValidation=True
    )
    try:
        content = si.RetrieveContent()
        keys = [f.key for f in content.customFieldsManager.field if f.name == field]
        # Only these VMs: others of the shared simulator may be deleted by other tests meanwhile.
        values = {
            vm.name: v.value for vm in vms for v in vim.VirtualMachine(vm.moid, si._stub).customValue if v.key in keys
        }
        return values, len(keys)
    finally:
        Disconnect(si)


def test_set_custom_value_defines_the_field_once_and_sets_each_vms_value(client, vcsim, two_vms):
    field = f"test.marker-{uuid.uuid4().hex[:6]}"
    first, second = two_vms
    client.set_custom_value(first.moid, 41, name=field)
    client.set_custom_value(second.moid, "42", name=field)
    client.set_custom_value(first.moid, "43", name=field)
    values, definitions = read_back(vcsim, field, two_vms)
    assert definitions == 1
    assert values == {first.name: "43", second.name: "42"}
