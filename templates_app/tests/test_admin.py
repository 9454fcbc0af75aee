"""The templates admin: list with badges, create from a vCenter VM, sync, delete, detail with the vCenter facts."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from autoscaling.models import AutoscalingConfig
from templates_app.models import VMTemplate

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

CHANGELIST = reverse("admin:templates_app_vmtemplate_changelist")
CREATE = reverse("admin:templates_app_vmtemplate_create")
SYNC = reverse("admin:templates_app_vmtemplate_sync")


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_changelist_shows_badges_filters_and_search(vcsim, admin_client):
    VMTemplate.objects.create(name="web", status="ready")
    VMTemplate.objects.create(name="db", status="failed", last_error="boom")
    response = admin_client.get(CHANGELIST)
    page = response.content.decode()
    assert response.status_code == 200
    assert "#2e7d32" in page and "#c62828" in page  # the ready and failed badges
    assert "Sync from vCenter" in page and CREATE in page
    assert admin_client.get(CHANGELIST, {"status__exact": "failed"}).context["cl"].result_count == 1
    assert admin_client.get(CHANGELIST, {"q": "we"}).context["cl"].result_count == 1


def test_create_from_vm_picker_and_conversion(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    assert admin_client.get(reverse("admin:templates_app_vmtemplate_add")).url == CREATE
    form_page = admin_client.get(CREATE)
    assert form_page.status_code == 200
    picker = dict(form_page.context["form"].fields["source_vm"].choices)
    assert vm.name in picker and "DC0_H0_VM0" in picker and "poweredOff" in picker[vm.name]
    html = form_page.content.decode()
    assert 'value="Create template"' in html and "converts it in the background" in html and 'name="source_vm"' in html

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(CREATE, {"source_vm": vm.name, "name": "", "method": "mark", "notes": "base"})
    template = VMTemplate.objects.get(name=vm.name)
    assert response.status_code == 302 and response.url == reverse(
        "admin:templates_app_vmtemplate_change", args=[template.pk]
    )
    assert template.status == "ready" and template.notes == "base" and template.created_by.username == "admin"
    assert vc.get_vm(vm.moid).is_template

    detail = admin_client.get(response.url).content.decode()
    for fact in (template.vcenter_moid, template.vcenter_uuid, "DC0_C0", "LocalDS_0", "/DC0/vm"):
        assert fact in detail


def test_create_form_shows_service_errors(vcsim, scratch_vm, admin_client):
    vm = scratch_vm(powered_on=True)
    response = admin_client.post(CREATE, {"source_vm": vm.name, "method": "mark"})
    assert response.status_code == 200
    assert "allow the portal to power it off" in str(response.context["form"].errors["power_off_allowed"])
    assert not VMTemplate.objects.exists()


def test_create_form_when_vcenter_is_down(vcsim, closed_port, admin_client):
    vcsim.VCENTER_URL = f"https://127.0.0.1:{closed_port}/sdk"
    response = admin_client.get(CREATE)
    assert response.status_code == 200 and "vCenter could not be asked" in response.content.decode()
    response = admin_client.post(CREATE, {"source_vm": "DC0_H0_VM0", "method": "mark"})
    assert response.status_code == 200 and "unreachable" in response.content.decode()
    assert not VMTemplate.objects.exists()


def test_sync_button_and_action(vcsim, vc, scratch_vm, admin_client):
    vm = scratch_vm()
    vc.mark_as_template(vm.moid)
    response = admin_client.post(SYNC, follow=True)
    assert any("Synced from vCenter" in m for m in messages_of(response))
    assert VMTemplate.objects.get(name=vm.name).status == "ready"

    gone = VMTemplate.objects.create(name="gone", status="ready", vcenter_uuid="no-such-uuid")
    response = admin_client.post(
        CHANGELIST, {"action": "sync_from_vcenter", ACTION_CHECKBOX_NAME: [gone.pk]}, follow=True
    )
    assert any("1 missing" in m for m in messages_of(response))
    gone.refresh_from_db()
    assert gone.status == "missing"
    assert "Missing in vCenter" in admin_client.get(CHANGELIST).content.decode()


def test_sync_reports_vcenter_down(vcsim, closed_port, admin_client):
    vcsim.VCENTER_URL = f"https://127.0.0.1:{closed_port}/sdk"
    response = admin_client.post(SYNC, follow=True)
    assert response.status_code == 200
    assert any("Sync failed" in m and "unreachable" in m for m in messages_of(response))


def test_delete_action_confirms_and_respects_configs(vcsim, vc, scratch_vm, admin_client):
    vm = scratch_vm()
    marked = vc.mark_as_template(vm.moid)
    free = VMTemplate.objects.create(
        name=vm.name, status="ready", vcenter_moid=vm.moid, vcenter_uuid=marked.instance_uuid
    )
    used = VMTemplate.objects.create(name="used", status="ready")
    AutoscalingConfig.objects.create(service_name="shop", template=used)
    selection = {"action": "delete_templates", ACTION_CHECKBOX_NAME: [free.pk, used.pk]}

    confirm = admin_client.post(CHANGELIST, selection)
    assert confirm.status_code == 200 and "Also delete them in vCenter" in confirm.content.decode()
    assert VMTemplate.objects.count() == 2

    response = admin_client.post(CHANGELIST, {**selection, "confirmed": "yes", "delete_in_vcenter": "on"}, follow=True)
    notes = messages_of(response)
    assert any("used by the autoscaling config(s) shop" in m for m in notes)
    assert any("Deleted 1 template" in m for m in notes)
    assert list(VMTemplate.objects.values_list("name", flat=True)) == ["used"]
    assert vc.find_vm(vm.name) is None


def test_delete_page_of_a_used_template(vcsim, admin_client):
    used = VMTemplate.objects.create(name="used", status="ready")
    AutoscalingConfig.objects.create(service_name="shop", template=used)
    url = reverse("admin:templates_app_vmtemplate_delete", args=[used.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert any("used by the autoscaling config(s) shop" in m for m in messages_of(response))
    assert VMTemplate.objects.filter(pk=used.pk).exists()

    free = VMTemplate.objects.create(name="free", status="failed")
    admin_client.post(reverse("admin:templates_app_vmtemplate_delete", args=[free.pk]), {"post": "yes"})
    assert not VMTemplate.objects.filter(pk=free.pk).exists()


def test_detail_page_is_read_only_but_notes(vcsim, admin_client):
    template = VMTemplate.objects.create(name="web", status="ready", vcenter_moid="vm-77", notes="old")
    url = reverse("admin:templates_app_vmtemplate_change", args=[template.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "vm-77" in page.content.decode()
    assert list(page.context["adminform"].form.fields) == ["notes"]
    admin_client.post(url, {"notes": "new", "name": "renamed"})
    template.refresh_from_db()
    assert template.notes == "new" and template.name == "web"
