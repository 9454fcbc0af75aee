"""integrations.vcenter against the lab's vCenter simulator (real SOAP, real pyvmomi)."""

import socket
import threading
import uuid

import pytest

from integrations.errors import IntegrationError
from integrations.vcenter import GuestCustomization, VcenterClient

pytestmark = pytest.mark.lab


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def vcsim(lab):
    return lab.info("vcsim")


@pytest.fixture
def client(vcsim):
    with VcenterClient(vcsim["url"], vcsim["user"], vcsim["password"], verify_tls=False, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def base_template(vcsim):
    """A template of this module's own, cloned from a simulator VM that stays running."""
    with VcenterClient(vcsim["url"], vcsim["user"], vcsim["password"], verify_tls=False) as client:
        source = client.find_vm("DC0_C0_RP0_VM0")
        return client.clone_to_template(source.moid, name=unique("it-base"))


@pytest.fixture
def fresh_vm(client, base_template):
    """A powered-off VM nobody else uses; destroyed afterwards."""
    vm = client.clone_from_template(base_template.moid, name=unique("it-vm"), resource_pool="DC0_C0")
    yield vm
    client.destroy_vm(vm.moid)


def expect_error(code, fn, *args, **kwargs):
    with pytest.raises(IntegrationError) as info:
        fn(*args, **kwargs)
    assert info.value.system == "vcenter"
    assert info.value.code == code, str(info.value)
    return info.value


def test_list_vms_reads_facts_in_one_round_trip(client, vcsim):
    client.list_vms()  # log in and warm up
    before = client.round_trips
    vms = client.list_vms()
    assert client.round_trips - before == 1
    by_name = {vm.name: vm for vm in vms}
    vm = by_name["DC0_C0_RP0_VM1"]
    assert vm.moid.startswith("vm-")
    assert vm.instance_uuid and vm.power_state == "poweredOn" and not vm.is_template
    assert vm.num_cpus == 1 and vm.memory_mb == 32 and vm.guest_os
    assert vm.datacenter == "DC0" and vm.folder == "/DC0/vm"
    assert vm.cluster == "DC0_C0" and vm.host.startswith("DC0_C0_H")
    assert vm.resource_pool == "/DC0/host/DC0_C0/Resources"
    assert vm.datastore == "LocalDS_0"
    assert by_name["DC0_H0_VM0"].cluster == ""  # standalone host
    assert len(vms) >= vcsim["vm_count"]


def test_find_get_and_name_check(client):
    vm = client.find_vm("DC0_H0_VM1")
    assert vm.name == "DC0_H0_VM1" and vm.host == "DC0_H0"
    assert client.get_vm(vm.moid) == vm
    assert client.find_vm("no-such-vm") is None
    assert client.name_taken("DC0_H0_VM1") and not client.name_taken("no-such-vm")
    error = expect_error("not_found", client.get_vm, "vm-999999")
    assert error.permanent and "no longer exists" in error.message


def test_clone_to_template_leaves_source_running(client):
    source = client.find_vm("DC0_H0_VM0")
    name = unique("it-tpl")
    template = client.clone_to_template(source.moid, name=name)
    assert template.is_template and template.name == name and template.folder == "/DC0/vm"
    assert client.get_vm(source.moid).power_state == "poweredOn"
    assert template.moid in {t.moid for t in client.list_templates()}
    error = expect_error("name_taken", client.clone_to_template, source.moid, name=name)
    assert error.permanent and name in error.message
    client.delete_template(template.moid)
    assert client.find_vm(name) is None


def test_mark_as_template_needs_power_off_permission(client, fresh_vm):
    client.power_on(fresh_vm.moid)
    error = expect_error("wrong_power_state", client.mark_as_template, fresh_vm.moid)
    assert error.permanent and "poweredOn" in error.message and fresh_vm.name in error.message
    assert not client.get_vm(fresh_vm.moid).is_template

    template = client.mark_as_template(fresh_vm.moid, power_off=True)
    assert template.is_template and template.power_state == "poweredOff" and template.moid == fresh_vm.moid
    assert expect_error("is_template", client.mark_as_template, fresh_vm.moid).permanent


def test_delete_template_refuses_a_plain_vm(client, fresh_vm):
    error = expect_error("not_template", client.delete_template, fresh_vm.moid)
    assert "not a template" in error.message
    assert client.get_vm(fresh_vm.moid).name == fresh_vm.name


def test_clone_customize_power_on_and_get_guest_ip(client, base_template):
    name = unique("it-web")
    vm = client.clone_from_template(
        base_template.moid,
        name=name,
        folder="/DC0/vm",
        resource_pool="/DC0/host/DC0_C0/Resources",
        datastore="LocalDS_0",
        network="VM Network",
    )
    try:
        assert vm.power_state == "poweredOff" and not vm.is_template and vm.cluster == "DC0_C0"
        assert vm.networks == ("VM Network",)
        custom = GuestCustomization(
            hostname=name,
            ip_address="127.0.100.7",
            netmask="255.255.255.0",
            gateway="127.0.100.1",
            dns_servers=("127.0.0.53",),
        )
        client.customize(vm.moid, custom)
        client.power_on(vm.moid)
        assert client.wait_for_guest_ip(vm.moid, timeout=10, interval=0.1, expected="127.0.100.7") == "127.0.100.7"
        running = client.get_vm(vm.moid)
        assert running.ip_address == "127.0.100.7" and running.hostname == name and running.powered_on
        expect_error("name_taken", client.clone_from_template, base_template.moid, name=name)
    finally:
        client.destroy_vm(vm.moid)
    assert client.find_vm(name) is None
    client.destroy_vm(vm.moid)  # already gone: nothing to do


def test_customize_refuses_bad_input_and_running_vm(client, fresh_vm):
    error = expect_error(
        "invalid_customization",
        client.customize,
        fresh_vm.moid,
        GuestCustomization(hostname="web", ip_address="127.0.100.300", netmask="255.255.255.0"),
    )
    assert "ip_address" in error.message and error.permanent
    error = expect_error(
        "invalid_customization",
        client.customize,
        fresh_vm.moid,
        GuestCustomization(hostname="web", ip_address="127.0.100.5", netmask="255.255.255.0", gateway="127.0.9.1"),
    )
    assert "gateway" in error.message
    client.power_on(fresh_vm.moid)
    good = GuestCustomization(hostname="web", ip_address="127.0.100.5", netmask="255.255.255.0")
    assert "powered off" in expect_error("wrong_power_state", client.customize, fresh_vm.moid, good).message


def test_wait_for_guest_ip_times_out(client, fresh_vm):
    client.power_on(fresh_vm.moid)  # no customization: the simulator never reports an IP
    error = expect_error("timeout", client.wait_for_guest_ip, fresh_vm.moid, timeout=0.3, interval=0.1)
    assert not error.permanent and fresh_vm.name in error.message and "Timed out" in error.message


def test_clone_from_something_that_is_not_there(client, base_template):
    error = expect_error("not_found", client.clone_from_template, base_template.moid, name=unique("x"), folder="/nope")
    assert "VM folder '/nope'" in error.message
    vm = client.find_vm("DC0_H0_VM1")
    assert expect_error("not_template", client.clone_from_template, vm.moid, name=unique("x")).permanent


def test_destroy_refuses_running_vm_without_power_off(client, fresh_vm):
    client.power_on(fresh_vm.moid)
    expect_error("wrong_power_state", client.destroy_vm, fresh_vm.moid, power_off=False)
    client.destroy_vm(fresh_vm.moid)
    assert client.find_vm(fresh_vm.name) is None


def test_login_failed(vcsim):
    client = VcenterClient(vcsim["url"], vcsim["user"], "wrong-password", verify_tls=False)
    error = expect_error("login_failed", client.list_vms)
    assert error.permanent and "refused the login" in error.message and "wrong-password" not in error.message


def test_unknown_certificate_is_refused_unless_verification_is_off(vcsim):
    client = VcenterClient(vcsim["url"], vcsim["user"], vcsim["password"], verify_tls=True)
    error = expect_error("tls_untrusted", client.list_vms)
    assert error.permanent and "VCENTER_VERIFY_TLS" in error.message


def test_unreachable(lab):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    client = VcenterClient(f"https://127.0.0.1:{port}/sdk", "u", "p", verify_tls=False, timeout=2)
    error = expect_error("unreachable", client.list_vms)
    assert not error.permanent and "unreachable" in error.message


def test_timeout_when_vcenter_does_not_answer():
    """A listener that accepts connections but never answers, like a hung vCenter."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        client = VcenterClient(f"https://127.0.0.1:{server.getsockname()[1]}/sdk", "u", "p", timeout=0.5)
        error = expect_error("timeout", client.list_vms)
        assert not error.permanent and "did not answer within 0.5 s" in error.message
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.parametrize("url", ["vcenter.example", "ftp://127.0.0.1/sdk", "https://127.0.0.1:99999/sdk", ""])
def test_bad_url(url):
    with pytest.raises(IntegrationError) as info:
        VcenterClient(url, "u", "p")
    assert info.value.permanent and info.value.code == "bad_url"


def test_rename_checks_the_name(client, fresh_vm):
    name = unique("it-renamed")
    assert client.rename_vm(fresh_vm.moid, name=name).name == name
    assert client.find_vm(fresh_vm.name) is None
    assert expect_error("name_taken", client.rename_vm, fresh_vm.moid, name="DC0_H0_VM0").permanent


def test_vm_facts_and_the_ownership_marker_in_one_round_trip(client, fresh_vm):
    field = unique("it.owner")  # a field of this test's own: the simulator is shared by the session
    assert client.custom_field_ensure(field) == client.custom_field_ensure(field)
    client.set_custom_value(fresh_vm.moid, "17", name=field)
    client.set_custom_value(fresh_vm.moid, "18", name=field)  # the last value counts
    with VcenterClient(client.url, client.user, client._password, verify_tls=False) as other:
        assert other.custom_field_ensure(field) == client.custom_field_ensure(field)  # defined once
    client.list_vm_facts(owner_field=field)  # log in and warm up
    before = client.calls.copy()
    facts = {vm.moid: vm for vm in client.list_vm_facts(owner_field=field)}
    assert client.calls - before == {"RetrievePropertiesEx": 1}
    mine = facts[fresh_vm.moid]
    assert (mine.name, mine.instance_uuid, mine.owner) == (fresh_vm.name, fresh_vm.instance_uuid, "18")
    assert mine.power_state == "poweredOff" and not mine.powered_on and mine.guest_heartbeat in ("gray", "green")
    running = next(vm for vm in facts.values() if vm.name == "DC0_H0_VM1")
    assert running.powered_on and running.owner == "" and not running.is_template
    assert all(vm.owner == "" for moid, vm in facts.items() if moid != fresh_vm.moid)


def test_setting_a_custom_value_on_a_vm_that_is_gone(client):
    error = expect_error("not_found", client.set_custom_value, "vm-999999", "1", name=unique("it.owner"))
    assert error.permanent


def test_shutdown_guest_asks_the_guest_and_needs_no_power_off(client, fresh_vm):
    client.power_on(fresh_vm.moid)
    client.calls.clear()
    assert client.shutdown_guest(fresh_vm.moid, timeout=5, interval=0.1) == "shutdown"
    assert client.get_vm(fresh_vm.moid).power_state == "poweredOff"
    assert client.calls["ShutdownGuest"] == 1 and client.calls["PowerOffVM_Task"] == 0
    # Already off: nothing is sent (ShutdownGuest would be refused with InvalidPowerState).
    assert client.shutdown_guest(fresh_vm.moid, timeout=5) == "already_off"
    assert client.calls["ShutdownGuest"] == 1
