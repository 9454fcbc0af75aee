"""VM templates end to end: REST API -> services -> django-q task -> the lab's vCenter simulator."""

import pytest
from django.core.management import call_command
from django_q.conf import Conf
from django_q.models import OrmQ

from autoscaling.models import AutoscalingConfig
from templates_app import services
from templates_app.models import VMTemplate
from templates_app.tests.conftest import unique

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

URL = "/api/templates"


def create(client, capture, **body):
    """POST a template and run what was queued on commit (the conversion task, in-process)."""
    with capture(execute=True):
        response = client.post(URL, body, content_type="application/json")
    return response


# --- create and convert ------------------------------------------------------------------------------------------
def test_mark_converts_in_the_background(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    name = unique("tt-mark")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(URL, {"source_vm": vm.name, "name": name}, content_type="application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "converting" and body["name"] == name and body["source_vm_moid"] == vm.moid
    assert body["created_by"] == "admin"
    assert len(callbacks) == 1  # the conversion is queued on commit, not run in the request
    assert not vc.get_vm(vm.moid).is_template

    callbacks[0]()
    template = VMTemplate.objects.get(pk=body["id"])
    assert template.status == "ready" and template.last_error == ""
    converted = vc.get_vm(vm.moid)
    assert converted.is_template and converted.name == name  # marked in place and renamed to the template's name
    assert template.vcenter_moid == vm.moid and template.vcenter_uuid == converted.instance_uuid
    assert template.datacenter == "DC0" and template.cluster == "DC0_C0" and template.datastore == "LocalDS_0"
    assert template.folder == "/DC0/vm" and template.num_cpus == 1 and template.memory_mb == 32
    assert template.synced_at is not None

    detail = admin_client.get(f"{URL}/{template.pk}").json()
    assert detail["status"] == "ready" and detail["vcenter_moid"] == vm.moid


def test_conversion_task_is_queued_for_the_cluster(
    vcsim, scratch_vm, admin_client, django_capture_on_commit_callbacks, monkeypatch
):
    """Without sync mode the task goes to the django-q broker, named after the template."""
    monkeypatch.setattr(Conf, "SYNC", False)
    vm = scratch_vm()
    before = OrmQ.objects.count()
    response = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name)
    assert response.status_code == 202
    queued = OrmQ.objects.order_by("-id")[: OrmQ.objects.count() - before]
    tasks = [q.task for q in queued]
    assert any(t["func"] == services.CONVERT_TASK and t["args"] == (response.json()["id"],) for t in tasks)
    assert VMTemplate.objects.get(pk=response.json()["id"]).status == "converting"


def test_clone_leaves_the_source_running(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm(powered_on=True)
    response = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name, method="clone")
    assert response.status_code == 202, response.content
    template = VMTemplate.objects.get(pk=response.json()["id"])
    assert template.name == f"{vm.name}-template" and template.status == "ready", template.last_error
    assert vc.get_vm(vm.moid).power_state == "poweredOn" and not vc.get_vm(vm.moid).is_template
    clone = vc.find_vm(template.name)
    assert clone.is_template and clone.moid == template.vcenter_moid and clone.moid != vm.moid
    vc.delete_template(clone.moid)


def test_mark_powers_off_only_when_allowed(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm(powered_on=True)
    refused = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name)
    assert refused.status_code == 400
    assert "poweredOn" in refused.json()["errors"]["power_off_allowed"][0]
    assert not VMTemplate.objects.exists()

    response = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name, power_off_allowed=True)
    assert response.status_code == 202
    assert VMTemplate.objects.get().status == "ready"
    converted = vc.get_vm(vm.moid)
    assert converted.is_template and converted.power_state == "poweredOff"


def test_bad_input_is_refused_by_field_and_writes_nothing(vcsim, scratch_vm, admin_client):
    vm = scratch_vm()
    VMTemplate.objects.create(name="taken", status="ready")

    def post(**body):
        response = admin_client.post(URL, body, content_type="application/json")
        assert response.status_code == 400, response.content
        return response.json()["errors"]

    assert "source_vm" in post(name="x")
    assert "There is no VM named nope" in post(source_vm="nope")["source_vm"][0]
    assert "already exists in the portal" in post(source_vm=vm.name, name="taken")["name"][0]
    assert "method" in post(source_vm=vm.name, method="copy")
    assert "already taken" not in str(post(source_vm=vm.name, name="a/b"))
    assert "vCenter already has" in post(source_vm=vm.name, name="DC0_H0_VM0")["name"][0]
    assert "other than its source" in post(source_vm=vm.name, name=vm.name, method="clone")["name"][0]
    assert list(VMTemplate.objects.values_list("name", flat=True)) == ["taken"]


def test_a_template_is_not_converted_again(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    vc.mark_as_template(vm.moid)
    response = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name)
    assert response.status_code == 400
    assert "already a template" in response.json()["errors"]["source_vm"][0]


def test_conversion_runs_once(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    response = create(admin_client, django_capture_on_commit_callbacks, source_vm=vm.name)
    template = VMTemplate.objects.get(pk=response.json()["id"])
    assert template.status == "ready"
    services.template_convert(template_id=template.pk)  # a second delivery of the task: nothing happens
    assert VMTemplate.objects.get(pk=template.pk).status == "ready"
    # A conversion that happened in vCenter but was not recorded is adopted, not repeated.
    VMTemplate.objects.filter(pk=template.pk).update(status="converting")
    services.template_convert(template_id=template.pk)
    assert VMTemplate.objects.get(pk=template.pk).status == "ready"


# --- failures during the conversion ------------------------------------------------------------------------------
def convert_after(admin_client, capture, change, **body):
    """Create (validation passes), then `change` the world before the queued conversion runs."""
    with capture(execute=False) as callbacks:
        response = admin_client.post(URL, body, content_type="application/json")
    assert response.status_code == 202, response.content
    change()
    for callback in callbacks:
        callback()
    return VMTemplate.objects.get(pk=response.json()["id"])


def test_failure_vm_not_found(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    template = convert_after(
        admin_client, django_capture_on_commit_callbacks, lambda: vc.destroy_vm(vm.moid), source_vm=vm.name
    )
    assert template.status == "failed"
    assert "no longer exists" in template.last_error and vm.moid in template.last_error


def test_failure_wrong_power_state(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    template = convert_after(
        admin_client,
        django_capture_on_commit_callbacks,
        lambda: vc.power_on(vm.moid),
        source_vm=vm.name,
        name=unique("tt-renamed"),
    )
    assert template.status == "failed"
    assert "poweredOn" in template.last_error and "allow the portal to power it off" in template.last_error
    untouched = vc.get_vm(vm.moid)
    assert not untouched.is_template and untouched.name == vm.name  # not renamed either


def test_failure_name_taken(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm, other = scratch_vm(), scratch_vm()
    name = unique("tt-clone")
    template = convert_after(
        admin_client,
        django_capture_on_commit_callbacks,
        lambda: vc.rename_vm(other.moid, name=name),
        source_vm=vm.name,
        name=name,
        method="clone",
    )
    assert template.status == "failed"
    assert f"the name '{name}' is already taken" in template.last_error


def test_failure_vcenter_unreachable(vcsim, scratch_vm, closed_port, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()

    def vcenter_goes_away():
        vcsim.VCENTER_URL = f"https://127.0.0.1:{closed_port}/sdk"

    template = convert_after(admin_client, django_capture_on_commit_callbacks, vcenter_goes_away, source_vm=vm.name)
    assert template.status == "failed"
    assert "is unreachable" in template.last_error and "Retrying may help" in template.last_error


def test_failure_login(vcsim, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()

    def password_changed():
        vcsim.VCENTER_PASSWORD = "not-the-password"

    template = convert_after(admin_client, django_capture_on_commit_callbacks, password_changed, source_vm=vm.name)
    assert template.status == "failed"
    assert "refused the login" in template.last_error and "VCENTER_PASSWORD" in template.last_error
    assert "not-the-password" not in template.last_error


def test_failure_timeout(vcsim, scratch_vm, hung_port, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()

    def vcenter_hangs():
        vcsim.VCENTER_URL = f"https://127.0.0.1:{hung_port}/sdk"
        vcsim.VCENTER_TIMEOUT = 0.5

    template = convert_after(admin_client, django_capture_on_commit_callbacks, vcenter_hangs, source_vm=vm.name)
    assert template.status == "failed"
    assert "did not answer within 0.5 s" in template.last_error and "Retrying may help" in template.last_error


def test_failed_conversion_can_be_retried(vcsim, vc, scratch_vm, admin_client, django_capture_on_commit_callbacks):
    vm = scratch_vm()
    template = convert_after(
        admin_client, django_capture_on_commit_callbacks, lambda: vc.power_on(vm.moid), source_vm=vm.name
    )
    assert template.status == "failed"
    vc.power_off(vm.moid)
    with django_capture_on_commit_callbacks(execute=True):
        services.template_retry(template=template)
    template.refresh_from_db()
    assert template.status == "ready" and template.last_error == ""


# --- list, detail, delete ----------------------------------------------------------------------------------------
def test_list_filters_searches_and_paginates(vcsim, admin_client):
    for index in range(3):
        VMTemplate.objects.create(name=f"web-{index}", status="ready")
    VMTemplate.objects.create(name="db-1", status="failed", last_error="boom")
    body = admin_client.get(URL).json()
    assert body["count"] == 4 and [t["name"] for t in body["results"]] == ["db-1", "web-0", "web-1", "web-2"]
    assert [t["name"] for t in admin_client.get(URL, {"status": "failed"}).json()["results"]] == ["db-1"]
    assert admin_client.get(URL, {"search": "WEB"}).json()["count"] == 3
    assert admin_client.get(URL, {"status": "bogus"}).status_code == 400
    assert admin_client.get(URL, {"page": 2}).status_code == 404  # 4 templates fit on page 1


def test_detail_and_not_found(vcsim, admin_client, client):
    template = VMTemplate.objects.create(name="web", status="ready", vcenter_moid="vm-1")
    assert admin_client.get(f"{URL}/{template.pk}").json()["vcenter_moid"] == "vm-1"
    assert admin_client.get(f"{URL}/999999").status_code == 404
    assert client.get(URL).status_code in (401, 403)  # anonymous


def test_delete_keeps_or_removes_the_vcenter_template(vcsim, vc, scratch_vm, admin_client):
    first, second = scratch_vm(), scratch_vm()
    rows = []
    for vm in (first, second):
        marked = vc.mark_as_template(vm.moid)
        rows.append(
            VMTemplate.objects.create(
                name=vm.name, status="ready", vcenter_moid=vm.moid, vcenter_uuid=marked.instance_uuid
            )
        )
    assert "delete_in_vcenter" in admin_client.delete(f"{URL}/{rows[0].pk}?delete_in_vcenter=maybe").json()["errors"]
    assert admin_client.delete(f"{URL}/{rows[0].pk}").status_code == 204
    assert vc.get_vm(first.moid).is_template  # still in vCenter
    assert admin_client.delete(f"{URL}/{rows[1].pk}?delete_in_vcenter=true").status_code == 204
    assert vc.find_vm(second.name) is None
    assert not VMTemplate.objects.exists()


def test_delete_refused_while_a_config_uses_it(vcsim, admin_client):
    template = VMTemplate.objects.create(name="web", status="ready")
    AutoscalingConfig.objects.create(service_name="shop", template=template)
    response = admin_client.delete(f"{URL}/{template.pk}")
    assert response.status_code == 409
    assert "used by the autoscaling config(s) shop" in response.json()["detail"]
    assert VMTemplate.objects.filter(pk=template.pk).exists()
    assert admin_client.get(f"{URL}/{template.pk}").json()["in_use_by"] == ["shop"]


def test_delete_refused_while_converting(vcsim, admin_client):
    template = VMTemplate.objects.create(name="web", status="converting")
    response = admin_client.delete(f"{URL}/{template.pk}")
    assert response.status_code == 409 and "still being converted" in response.json()["detail"]


# --- vCenter VMs -------------------------------------------------------------------------------------------------
def test_vm_list_filters(vcsim, vc, scratch_vm, admin_client):
    off = scratch_vm()
    template = scratch_vm()
    vc.mark_as_template(template.moid)
    url = f"{URL}/vms"
    body = admin_client.get(url, {"page_size": 1000}).json()
    names = {vm["name"] for vm in body["results"]}
    assert {"DC0_H0_VM0", "DC0_C0_RP0_VM0", off.name} <= names and template.name not in names
    vm = next(vm for vm in body["results"] if vm["name"] == "DC0_C0_RP0_VM0")
    assert vm["cluster"] == "DC0_C0" and vm["power_state"] == "poweredOn" and vm["folder"] == "/DC0/vm"
    assert vm["moid"] and vm["instance_uuid"] and vm["num_cpus"] == 1 and vm["is_template"] is False

    with_templates = admin_client.get(url, {"include_templates": "true", "page_size": 1000}).json()["results"]
    assert template.name in {vm["name"] for vm in with_templates}
    by_name = admin_client.get(url, {"name": off.name.upper()}).json()
    assert [vm["name"] for vm in by_name["results"]] == [off.name]
    powered_off = admin_client.get(url, {"power_state": "poweredOff", "page_size": 1000}).json()["results"]
    assert off.name in {vm["name"] for vm in powered_off} and all(
        vm["power_state"] == "poweredOff" for vm in powered_off
    )
    assert "power_state" in admin_client.get(url, {"power_state": "warm"}).json()["errors"]


def test_vcenter_unreachable_is_a_502_with_the_reason(vcsim, closed_port, admin_client):
    vcsim.VCENTER_URL = f"https://127.0.0.1:{closed_port}/sdk"
    response = admin_client.get(f"{URL}/vms")
    assert response.status_code == 502
    body = response.json()
    assert "unreachable" in body["detail"] and body["code"] == "unreachable" and body["retryable"] is True
    response = admin_client.post(URL, {"source_vm": "DC0_H0_VM0"}, content_type="application/json")
    assert response.status_code == 502 and "unreachable" in response.json()["detail"]
    assert not VMTemplate.objects.exists()


def test_login_failed_is_a_502_with_the_reason(vcsim, admin_client):
    vcsim.VCENTER_PASSWORD = "wrong"
    response = admin_client.get(f"{URL}/vms")
    assert response.status_code == 502
    assert response.json()["code"] == "login_failed" and response.json()["retryable"] is False


def test_unknown_certificate_is_refused(vcsim, admin_client):
    vcsim.VCENTER_VERIFY_TLS = True
    response = admin_client.get(f"{URL}/vms")
    assert response.status_code == 502 and "not trusted" in response.json()["detail"]


# --- sync --------------------------------------------------------------------------------------------------------
def test_sync_imports_refreshes_and_marks_missing(vcsim, vc, scratch_vm):
    vm = scratch_vm()
    imported = vc.mark_as_template(vm.moid)
    known_vm = scratch_vm()
    known = vc.mark_as_template(known_vm.moid)
    row = VMTemplate.objects.create(
        name="known", status="missing", vcenter_moid=known.moid, vcenter_uuid=known.instance_uuid, num_cpus=8
    )
    gone = VMTemplate.objects.create(name="gone", status="ready", vcenter_moid="vm-0", vcenter_uuid="no-such-uuid")
    converting = VMTemplate.objects.create(name="busy", status="converting")

    result = services.templates_sync()
    assert imported.name in result.created and "known" in result.updated and result.missing == ["gone"]
    new = VMTemplate.objects.get(name=imported.name)
    assert new.status == "ready" and new.vcenter_uuid == imported.instance_uuid and new.cluster == "DC0_C0"
    row.refresh_from_db()
    assert row.status == "ready" and row.num_cpus == 1  # facts refreshed from vCenter
    gone.refresh_from_db()
    assert gone.status == "missing" and "Not found" in gone.last_error
    converting.refresh_from_db()
    assert converting.status == "converting"

    # Running it again changes nothing; the vanished one stays missing.
    again = services.templates_sync()
    assert not again.created and again.missing == ["gone"]


def test_sync_command(vcsim, vc, scratch_vm, capsys):
    vm = scratch_vm()
    vc.mark_as_template(vm.moid)
    call_command("sync_templates")
    out = capsys.readouterr().out
    assert f"imported: {vm.name}" in out and "imported," in out
    assert VMTemplate.objects.get(name=vm.name).status == "ready"


def test_sync_command_reports_vcenter_down(vcsim, closed_port):
    from django.core.management.base import CommandError

    vcsim.VCENTER_URL = f"https://127.0.0.1:{closed_port}/sdk"
    with pytest.raises(CommandError, match="unreachable"):
        call_command("sync_templates")


def test_sync_is_scheduled(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="templates_app.tasks.templates_sync")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 15 and schedule.repeats == -1


def test_logs_name_who_queued_a_conversion(vcsim, scratch_vm, admin_client, django_capture_on_commit_callbacks, caplog):
    """The log names the user, or "system" for a command or the demo: never "queued by None"."""
    caplog.set_level("INFO", logger="templates_app.services")
    create(admin_client, django_capture_on_commit_callbacks, source_vm=scratch_vm().name, name=unique("tt-log"))
    services.template_create(source_vm=scratch_vm().name, name=unique("tt-log"), method="clone", user=None)
    queued = [r.getMessage() for r in caplog.records if "queued by" in r.getMessage()]
    assert [m.rsplit(" ", 1)[1] for m in queued] == ["admin", "system"], queued
