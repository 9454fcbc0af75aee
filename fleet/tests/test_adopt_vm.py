"""Adopting a VM picked from vCenter's VM list in the admin (the lab's vCenter simulator)."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from autoscaling import services as autoscaling_services
from fleet.models import ManagedInstance
from integrations.vcenter import VcenterClient
from templates_app.models import VMTemplate

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
ADOPT = reverse("admin:fleet_managedinstance_adopt")


@pytest.fixture
def vc(lab):
    info = lab.info("vcsim")
    with VcenterClient(info["url"], info["user"], info["password"], verify_tls=False) as client:
        yield client


@pytest.fixture
def vm_with_ip(lab, vc):
    """A VM of our own whose guest reports 127.62.0.5 (set as VMware Tools would, through the simulator)."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    suffix = uuid.uuid4().hex[:8]
    template = vc.clone_to_template(vc.find_vm("DC0_H0_VM0").moid, name=f"adopt-tpl-{suffix}")
    vm = vc.clone_from_template(template.moid, name=f"adopt-vm-{suffix}", resource_pool="DC0_C0")
    info = lab.info("vcsim")
    si = SmartConnect(
        host=info["host"], port=info["port"], user=info["user"], pwd=info["password"], disableSslCertValidation=True
    )
    try:
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress", value="127.62.0.5")])
        vim.VirtualMachine(vm.moid, si._stub).ReconfigVM_Task(spec=spec)
    finally:
        Disconnect(si)
    yield vc.get_vm(vm.moid)
    vc.destroy_vm(vm.moid, power_off=True)
    vc.delete_template(template.moid)


@pytest.fixture
def admin_client(client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def test_a_vm_picked_from_vcenter_becomes_an_adopted_instance(lab_settings, vm_with_ip, admin_client):
    lab_settings("vcsim")
    template = VMTemplate.objects.create(name="tpl-adopt", status=VMTemplate.Status.READY)
    config = autoscaling_services.config_create(data={"service_name": "adopt-web", "template": template})
    assert admin_client.get(reverse("admin:fleet_managedinstance_add")).url == ADOPT
    page = admin_client.get(ADOPT)
    picker = dict(page.context["form"].fields["vm"].choices)
    assert "127.62.0.5" in picker[vm_with_ip.name]
    html = page.content.decode()
    assert 'value="Adopt the VM"' in html and "protected from scale-in" in html and 'name="vm"' in html

    response = admin_client.post(ADOPT, {"config": config.pk, "vm": vm_with_ip.name, "port": 9100})
    instance = ManagedInstance.objects.get(config=config)
    assert response.status_code == 302, response.context["form"].errors
    assert response.url == reverse("admin:fleet_managedinstance_change", args=[instance.pk])
    assert (instance.origin, instance.state, instance.protected_from_scale_in) == ("adopted", "in_service", True)
    assert (instance.vm_name, instance.vcenter_uuid) == (vm_with_ip.name, vm_with_ip.instance_uuid)
    assert instance.ip_address == "127.62.0.5" and instance.monitor_target == "127.62.0.5:9100"
    config.refresh_from_db()
    assert config.monitored_instances == ["127.62.0.5:9100"]
    assert "Picked from vCenter" in instance.history.latest("at", "pk").reason

    again = admin_client.post(ADOPT, {"config": config.pk, "vm": vm_with_ip.name, "port": 9100})
    assert again.status_code == 200 and "already instance" in str(again.context["form"].non_field_errors())
    assert ManagedInstance.objects.filter(config=config).count() == 1
