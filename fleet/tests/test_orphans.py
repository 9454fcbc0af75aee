"""The orphan sweep against the real vCenter simulator and the lab's F5 stand-in: an orphan VM, member and IP
allocation are found, reported with their age and removed after the grace (a VM powered off first, destroyed
later); a VM without the marker, a member outside the service's IP range and a live instance's parts are never
touched."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from autoscaling.models import IpAllocation
from fleet.models import ManagedInstance, Orphan
from fleet.orphans import orphans_sweep
from fleet.tests.conftest import PARTITION, PORT
from lab.core import free_port

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
State = ManagedInstance.State
Kind = Orphan.Kind
OState = Orphan.State
OUTSIDE = "127.0.250.250"


@pytest.fixture
def graces(fleet_settings):
    fleet_settings.FLEET_ORPHAN_GRACE = 60
    fleet_settings.FLEET_ORPHAN_DESTROY_GRACE = 120
    return fleet_settings


def vm_by_name(vc, name):
    return next((vm for vm in vc.list_vm_facts() if vm.name == name), None)


def ours(result, service):
    return {row.kind: row for row in result.found if row.config_id == service.pk}


@pytest.fixture
def scene(vc, base_template, f5_api, service, make_instance):
    """A live instance; a removed one whose VM, member and allocation were left behind; a VM of the service's
    naming without the marker; a member of the pool outside the service's IP range."""
    kept = make_instance(service)
    left = make_instance(service, state=State.REMOVED)
    unmarked_name = f"{service.service_name}-unmarked"
    unmarked = vc.clone_from_template(base_template.moid, name=unmarked_name, resource_pool="DC0_C0")
    vc.power_on(unmarked.moid)
    f5_api.add_member(service.f5_pool, PARTITION, OUTSIDE, PORT)
    yield kept, left, unmarked
    if vm_by_name(vc, unmarked_name) is not None:
        vc.destroy_vm(unmarked.moid)


def test_orphans_are_found_then_removed_after_their_grace_and_nothing_else_is_touched(
    vc, f5, graces, service, scene, django_capture_on_commit_callbacks
):
    kept, left, unmarked = scene
    t0 = timezone.now()

    found = ours(orphans_sweep(now=t0), service)
    assert set(found) == {Kind.VM, Kind.MEMBER, Kind.ALLOCATION}
    assert found[Kind.VM].name == left.vm_name and f"#{left.pk}" in found[Kind.VM].reason
    assert found[Kind.MEMBER].details["address"] == left.ip_address
    assert found[Kind.ALLOCATION].details["allocation"] == left.ip_allocation_id
    assert all(row.state == OState.FOUND and row.first_seen_at == t0 for row in found.values())

    # Within the grace, --fix removes nothing; a second sighting keeps the same row (its first sighting).
    result = orphans_sweep(fix=True, now=t0 + timedelta(seconds=30))
    assert not [line for line in result.fixed if left.vm_name in line or left.ip_address in line]
    assert {row.pk for row in ours(result, service).values()} == {row.pk for row in found.values()}
    assert vm_by_name(vc, left.vm_name).powered_on

    # Past the grace: the VM is powered off (destroyed only after the second grace), member and address go.
    with django_capture_on_commit_callbacks(execute=True):
        result = orphans_sweep(fix=True, now=t0 + timedelta(seconds=61))
    rows = {row.kind: row for row in Orphan.objects.filter(config=service)}
    assert rows[Kind.VM].state == OState.POWERED_OFF
    assert vm_by_name(vc, left.vm_name).power_state == "poweredOff"
    assert rows[Kind.MEMBER].state == OState.REMOVED and rows[Kind.ALLOCATION].state == OState.REMOVED
    members = f5.members(service.f5_pool)
    assert f"{left.ip_address}:{PORT}" not in members
    assert IpAllocation.objects.get(pk=left.ip_allocation_id).state == IpAllocation.State.RELEASED

    result = orphans_sweep(fix=True, now=t0 + timedelta(seconds=61 + 60))
    assert vm_by_name(vc, left.vm_name) is not None  # the second grace has not passed
    result = orphans_sweep(fix=True, now=t0 + timedelta(seconds=61 + 121))
    assert any(f"VM {left.vm_name} destroyed" in line for line in result.fixed)
    assert vm_by_name(vc, left.vm_name) is None
    assert Orphan.objects.get(pk=rows[Kind.VM].pk).state == OState.REMOVED

    # Never touched: the VM without the marker, the member outside the IP range, the live instance's parts.
    assert vm_by_name(vc, unmarked.name).powered_on
    members = f5.members(service.f5_pool)
    assert f"{OUTSIDE}:{PORT}" in members and f"{kept.ip_address}:{PORT}" in members
    assert vm_by_name(vc, kept.vm_name).powered_on
    assert IpAllocation.objects.get(pk=kept.ip_allocation_id).state == IpAllocation.State.IN_USE
    assert not ours(orphans_sweep(fix=True, now=t0 + timedelta(hours=5)), service)


def test_a_vm_whose_marker_names_no_instance_is_an_orphan(vc, base_template, graces, service):
    clone = vc.clone_from_template(base_template.moid, name=f"{service.service_name}-stray", resource_pool="DC0_C0")
    vc.set_custom_value(clone.moid, 987654321)
    try:
        (row,) = [row for row in orphans_sweep().found if row.key == clone.moid]
        assert row.kind == Kind.VM and "987654321" in row.reason and row.config_id is None
    finally:
        vc.destroy_vm(clone.moid)


def test_an_orphan_that_stops_being_one_is_closed_as_gone(graces, service, scene, f5_api):
    _kept, left, _unmarked = scene
    found = ours(orphans_sweep(), service)
    # Someone releases the address and removes the member elsewhere: the next pass closes both rows.
    IpAllocation.objects.filter(pk=left.ip_allocation_id).update(state=IpAllocation.State.RELEASED)
    with_member = found[Kind.MEMBER]
    f5_api.remove_member(service.f5_pool, PARTITION, left.ip_address, PORT)
    result = orphans_sweep()
    assert set(ours(result, service)) == {Kind.VM}
    assert Orphan.objects.get(pk=with_member.pk).state == OState.GONE
    assert Orphan.objects.get(pk=found[Kind.ALLOCATION].pk).state == OState.GONE
    assert result.closed >= 2


def test_with_vcenter_down_the_vm_orphans_stay_as_they_are_and_the_command_fails(graces, service, scene, capsys):
    found = ours(orphans_sweep(), service)
    graces.VCENTER_URL = f"https://127.0.0.1:{free_port()}/sdk"
    result = orphans_sweep(fix=True, now=timezone.now() + timedelta(hours=1))
    assert result.errors and "vCenter" in result.errors[0]
    vm_row = Orphan.objects.get(pk=found[Kind.VM].pk)
    assert vm_row.state == OState.FOUND  # not closed, not acted on
    with pytest.raises(CommandError, match="did not complete"):
        call_command("sweep_orphans")


def test_the_command_reports_with_age_and_refuses_an_unknown_service(graces, service, scene, capsys):
    _kept, left, _unmarked = scene
    call_command("sweep_orphans", "--service", service.service_name)
    out = capsys.readouterr().out
    assert left.vm_name in out and "an orphan for" in out and "Run with --fix" in out
    assert left.ip_address in out
    with pytest.raises(CommandError, match="no autoscaling config"):
        call_command("sweep_orphans", "--service", "nope-nope")


def test_the_sweep_is_scheduled_every_ten_minutes(db):
    schedule = Schedule.objects.get(func="fleet.tasks.orphans_sweep")
    assert schedule.minutes == 10 and schedule.repeats == -1


def test_the_admin_lists_orphans_and_removes_the_selected_ones_only_with_the_permission(
    vc, graces, service, scene, client
):
    _kept, left, _unmarked = scene
    t0 = timezone.now() - timedelta(seconds=120)
    found = ours(orphans_sweep(now=t0), service)
    url = reverse("admin:fleet_orphan_changelist")
    viewer = User.objects.create_user("orphan-viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_orphan"))
    client.force_login(viewer)
    page = client.get(url)
    assert page.status_code == 200 and left.vm_name in page.content.decode()
    assert b'value="remove"' not in page.content
    client.post(url, {"action": "remove", "_selected_action": [found[Kind.MEMBER].pk]})
    assert Orphan.objects.get(pk=found[Kind.MEMBER].pk).state == OState.FOUND  # refused

    viewer.user_permissions.add(Permission.objects.get(codename="remove_orphan"))
    viewer = User.objects.get(pk=viewer.pk)
    client.force_login(viewer)
    client.post(url, {"action": "remove", "_selected_action": [found[Kind.MEMBER].pk]})
    assert Orphan.objects.get(pk=found[Kind.MEMBER].pk).state == OState.REMOVED
    assert Orphan.objects.get(pk=found[Kind.ALLOCATION].pk).state == OState.FOUND  # not selected
    assert vm_by_name(vc, left.vm_name).powered_on
