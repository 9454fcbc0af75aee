"""The fleet's reconcile against the real vCenter simulator and the lab's F5 stand-in: lost VMs are cleaned up,
health follows power and the F5 member after a grace period, and an outage changes nothing."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from autoscaling.models import AutoscalingConfig, IpAllocation, ProvisioningRun
from fleet.models import InstanceChange, ManagedInstance, ReconcileRun
from fleet.reconcile import UnknownService, _judge, fleet_reconcile
from integrations.vcenter import GuestCustomization, VmFacts
from lab.core import free_port
from templates_app.models import VMTemplate

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
State = ManagedInstance.State
Health = ManagedInstance.Health


def reload(instance):
    return ManagedInstance.objects.get(pk=instance.pk)


def test_a_vm_destroyed_behind_the_portals_back_is_lost_within_one_reconcile(
    vc, f5, service, make_instance, django_capture_on_commit_callbacks
):
    kept = make_instance(service)
    gone = make_instance(service)
    vc.destroy_vm(gone.vm_moid)
    f5.reset()  # count this pass's calls only

    with django_capture_on_commit_callbacks(execute=True):
        result = fleet_reconcile()

    assert result.ok, result.errors
    gone = reload(gone)
    assert gone.state == State.LOST
    lost_line = gone.history.get(to_state=State.LOST)
    assert lost_line.from_state == State.IN_SERVICE and lost_line.actor == "reconcile"
    assert f"VM {gone.vm_name} is no longer in vCenter" in lost_line.reason
    reasons = list(gone.history.values_list("reason", flat=True))
    assert any(f"{gone.ip_address} released" in reason for reason in reasons)
    assert any(f"{gone.ip_address}:8080 removed from pool /Common/{service.f5_pool}" in r for r in reasons)
    assert IpAllocation.objects.get(pk=gone.ip_allocation_id).state == IpAllocation.State.RELEASED
    members = f5.members(service.f5_pool)
    assert f"{gone.ip_address}:8080" not in members and f"{kept.ip_address}:8080" in members
    assert ProvisioningRun.objects.filter(status=ProvisioningRun.Status.QUEUED).exists()

    kept = reload(kept)
    assert kept.state == State.IN_SERVICE and kept.health == Health.HEALTHY
    assert kept.last_seen_at is not None and kept.vcenter_uuid and kept.power_state == "poweredOn"
    assert kept.f5_state == "up"
    assert IpAllocation.objects.get(pk=kept.ip_allocation_id).state == IpAllocation.State.IN_USE

    # One vCenter round trip for every VM, one read per managed pool; the run is recorded.
    assert result.vcenter_requests == 1 and result.f5_requests == 1
    pool_reads = f5.calls(path_contains=f"~{service.f5_pool}/members", method="GET")
    assert len(pool_reads) == 1
    run = ReconcileRun.objects.get(pk=result.run_id)
    assert run.ok and run.instances == 2 and run.vms == 5 and run.vcenter_requests == 1
    assert any("lost" in line for line in run.changes)

    # A second pass finds nothing more to do.
    again = fleet_reconcile()
    assert again.ok and again.lost == 0 and not again.changes
    assert reload(gone).history.count() == len(reasons)


def test_a_powered_off_vm_is_unhealthy_only_after_the_grace_and_healthy_when_back(
    vc, fleet_settings, service, make_instance
):
    instance = make_instance(service)
    moid = instance.vm_moid
    vc.power_off(moid)

    first = fleet_reconcile()
    instance = reload(instance)
    assert first.ok and first.unhealthy == 0
    assert instance.health == Health.HEALTHY and instance.power_state == "poweredOff"
    assert instance.trouble_since is not None
    assert not instance.history.exclude(health="").exists()

    # Still within the grace: unchanged. Past it: unhealthy, with the reason.
    ManagedInstance.objects.filter(pk=instance.pk).update(trouble_since=timezone.now() - timedelta(seconds=100))
    assert fleet_reconcile().unhealthy == 0
    ManagedInstance.objects.filter(pk=instance.pk).update(trouble_since=timezone.now() - timedelta(seconds=121))
    assert fleet_reconcile().unhealthy == 1
    instance = reload(instance)
    assert instance.state == State.IN_SERVICE and instance.health == Health.UNHEALTHY
    change = instance.history.get(health=Health.UNHEALTHY)
    assert f"VM {instance.vm_name} is poweredOff" in change.reason and change.actor == "reconcile"

    vc.power_on(moid)
    assert fleet_reconcile().healthy == 1
    instance = reload(instance)
    assert instance.health == Health.HEALTHY and instance.trouble_since is None
    assert instance.history.filter(health=Health.HEALTHY).get().reason.startswith("Recovered")


def test_an_f5_member_down_or_missing_makes_the_instance_unhealthy_after_the_grace(
    f5, f5_api, fleet_settings, service, make_instance
):
    fleet_settings.FLEET_UNHEALTHY_GRACE = 0
    down = make_instance(service)
    missing = make_instance(service)
    f5.set_member_state(service.f5_pool, f"{down.ip_address}:8080", "down")
    f5_api.remove_member(service.f5_pool, "Common", missing.ip_address, 8080)

    result = fleet_reconcile()

    assert result.unhealthy == 2
    down, missing = reload(down), reload(missing)
    assert down.health == Health.UNHEALTHY and down.f5_state == "down"
    assert "is down" in down.health_reason
    assert missing.health == Health.UNHEALTHY and "is not a member of F5 pool" in missing.health_reason
    assert down.state == missing.state == State.IN_SERVICE


def test_vcenter_unreachable_changes_nothing_and_reports_the_error(fleet_settings, f5, service, make_instance):
    instances = [make_instance(service, vm=False), make_instance(service, vm=False)]  # no VM: lost if believed
    fleet_settings.VCENTER_URL = f"https://127.0.0.1:{free_port()}/sdk"
    fleet_settings.VCENTER_TIMEOUT = 2.0
    f5.reset()

    result = fleet_reconcile()

    assert not result.ok and result.lost == 0 and not result.changes
    assert "vCenter" in result.errors[0] and "unreachable" in result.errors[0]
    assert "Nothing was changed" in result.errors[0]
    for instance in instances:
        now = reload(instance)
        assert now.state == State.IN_SERVICE and now.health == Health.HEALTHY and now.last_seen_at is None
        assert IpAllocation.objects.get(pk=instance.ip_allocation_id).state == IpAllocation.State.IN_USE
        assert f"{instance.ip_address}:8080" in f5.members(service.f5_pool)
    assert not InstanceChange.objects.exists()
    assert not f5.calls(path_contains="/members")  # F5 is not even asked
    run = ReconcileRun.objects.get(pk=result.run_id)
    assert not run.ok and "unreachable" in run.error and run.changes == []


def test_f5_unreachable_leaves_the_service_as_it_is(vc, fleet_settings, service, make_instance):
    instance = make_instance(service)
    vc.destroy_vm(instance.vm_moid)
    fleet_settings.F5_URL = f"http://127.0.0.1:{free_port()}"

    result = fleet_reconcile()

    assert not result.ok and result.lost == 0
    assert f"/Common/{service.f5_pool}" in result.errors[0] and "could not be reached" in result.errors[0]
    assert reload(instance).state == State.IN_SERVICE
    assert IpAllocation.objects.get(pk=instance.ip_allocation_id).state == IpAllocation.State.IN_USE


def test_a_clone_in_progress_is_not_lost_until_the_grace_has_passed(service, make_instance):
    young = make_instance(service, vm=False, member=False, state=State.PROVISIONING)
    old = make_instance(service, vm=False, member=False, state=State.PENDING)
    ManagedInstance.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=901))

    result = fleet_reconcile()

    assert result.lost == 1
    assert reload(young).state == State.PROVISIONING
    assert reload(old).state == State.LOST
    assert IpAllocation.objects.get(pk=old.ip_allocation_id).state == IpAllocation.State.RELEASED


def test_instances_are_matched_by_uuid_then_by_name_and_adopted_ones_by_ip(vc, fleet_settings, service):
    by_name = ManagedInstance.objects.create(config=service, state=State.IN_SERVICE, vm_name="DC0_H0_VM1")
    uuid = vc.find_vm("DC0_C0_RP0_VM0").instance_uuid
    by_uuid = ManagedInstance.objects.create(
        config=service, state=State.IN_SERVICE, vm_name="renamed-since", vcenter_uuid=uuid
    )
    # Same name, but the recorded UUID is another VM's: that VM is gone, the one with the name is another.
    impostor = ManagedInstance.objects.create(
        config=service, state=State.IN_SERVICE, vm_name="DC0_C0_RP0_VM1", vcenter_uuid="not-this-one"
    )
    service.f5_pool = ""  # no F5 here
    service.save()

    result = fleet_reconcile(service=service.service_name)

    assert result.lost == 1
    by_name, by_uuid = reload(by_name), reload(by_uuid)
    assert by_name.vcenter_uuid == vc.find_vm("DC0_H0_VM1").instance_uuid and by_name.last_seen_at
    assert by_uuid.state == State.IN_SERVICE and by_uuid.last_seen_at and by_uuid.vm_name == "renamed-since"
    assert reload(impostor).state == State.LOST


def test_the_command_reconciles_one_service_and_refuses_an_unknown_one(vc, service, make_instance, capsys):
    instance = make_instance(service)
    vc.destroy_vm(instance.vm_moid)

    call_command("fleet_reconcile", "--service", service.service_name)

    out = capsys.readouterr().out
    assert f"{service.service_name} {instance.vm_name}: lost: VM {instance.vm_name} is no longer in vCenter" in out
    assert "1 instances compared" in out and "1 lost" in out and "1 vCenter property reads" in out
    assert reload(instance).state == State.LOST
    assert ReconcileRun.objects.get().service == service.service_name

    with pytest.raises(CommandError, match="There is no autoscaling config for the service no-such-service"):
        call_command("fleet_reconcile", "--service", "no-such-service")
    with pytest.raises(UnknownService):
        fleet_reconcile(service="no-such-service")


def test_the_command_fails_with_the_error_when_vcenter_is_down(fleet_settings, service, make_instance, capsys):
    make_instance(service, vm=False)
    fleet_settings.VCENTER_URL = f"https://127.0.0.1:{free_port()}/sdk"
    with pytest.raises(CommandError, match="did not complete: 1 error"):
        call_command("fleet_reconcile")
    assert "unreachable" in capsys.readouterr().err


def test_the_admin_action_reconciles_the_selected_services(vc, admin_client, service, make_instance):
    instance = make_instance(service)
    vc.destroy_vm(instance.vm_moid)
    response = admin_client.post(
        "/admin/autoscaling/autoscalingconfig/",
        {"action": "reconcile_fleet", "_selected_action": [service.pk]},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "Fleet reconciled: 1 instances compared" in text and "1 lost" in text
    changed = reload(instance)
    assert changed.state == State.LOST
    assert changed.history.get(to_state=State.LOST).actor == "user admin"


def test_the_reconcile_is_scheduled_every_minute(db):
    schedule = Schedule.objects.get(func="fleet.tasks.fleet_reconcile")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1


def test_a_member_that_could_not_be_removed_is_removed_by_a_later_pass(vc, f5, service, make_instance):
    instance = make_instance(service)
    vc.destroy_vm(instance.vm_moid)
    member = f"{instance.ip_address}:8080"
    f5.fail_next(1, status=503, path="/members/", method="DELETE")

    first = fleet_reconcile()

    assert first.lost == 1 and not first.ok
    assert f"its F5 member {member} could not be removed" in first.errors[0]
    assert reload(instance).state == State.LOST and member in f5.members(service.f5_pool)

    second = fleet_reconcile()
    assert second.ok and second.lost == 0
    assert member not in f5.members(service.f5_pool)
    assert reload(instance).history.filter(reason__contains=f"{member} removed from pool").count() == 1


def test_a_red_heartbeat_is_a_trouble_and_gray_is_not(settings, db):
    # The simulator reports every VM's heartbeat gray (no VMware Tools): the judgement is shown on facts directly.
    settings.FLEET_UNHEALTHY_GRACE = 0
    template = VMTemplate.objects.create(name="heartbeat-template", status=VMTemplate.Status.READY)
    config = AutoscalingConfig.objects.create(service_name="heartbeat", template=template)
    instance = ManagedInstance.objects.create(config=config, state=State.IN_SERVICE, health=Health.HEALTHY)
    now = timezone.now()

    def facts(heartbeat):
        return VmFacts("vm-1", "web-1", "uuid-1", "poweredOn", heartbeat, "", str(instance.pk))

    assert _judge(instance, facts("gray"), None, now).health is None
    judgement = _judge(instance, facts("red"), None, now)
    assert judgement.health == Health.UNHEALTHY and "the guest heartbeat of VM web-1 is red" in str(judgement.reason)


def test_an_adopted_instance_is_found_by_its_guest_ip_a_created_one_is_not(vc, base_template, fleet_settings, service):
    vm = vc.clone_from_template(base_template.moid, name="legacy-web-0001", resource_pool="DC0_C0")
    try:
        vc.customize(vm.moid, GuestCustomization(hostname="legacy", ip_address="127.0.99.5", netmask="255.255.255.0"))
        vc.power_on(vm.moid)
        service.f5_pool = ""
        service.save()
        fields = {"config": service, "state": State.IN_SERVICE, "ip_address": "127.0.99.5"}
        adopted = ManagedInstance.objects.create(origin=ManagedInstance.Origin.ADOPTED, vm_name="legacy-web", **fields)
        created = ManagedInstance.objects.create(vm_name="web-gone", **fields)

        result = fleet_reconcile(service=service.service_name)

        adopted, created = reload(adopted), reload(created)
        assert adopted.state == State.IN_SERVICE and adopted.vcenter_uuid == vm.instance_uuid and adopted.last_seen_at
        assert created.state == State.LOST and result.lost == 1
    finally:
        vc.destroy_vm(vm.moid)


def test_an_adopted_instance_never_found_in_vcenter_is_left_alone_one_seen_before_is_lost(vc, fleet_settings, service):
    service.f5_pool = ""
    service.save()
    fields = {"config": service, "state": State.IN_SERVICE, "origin": ManagedInstance.Origin.ADOPTED}
    unknown = ManagedInstance.objects.create(ip_address="127.0.98.7", monitor_target="127.0.98.7:9100", **fields)
    seen = ManagedInstance.objects.create(
        vm_name="legacy-gone", vcenter_uuid="uuid-of-a-vm-since-deleted", last_seen_at=timezone.now(), **fields
    )

    result = fleet_reconcile(service=service.service_name)

    assert result.ok, result.errors
    assert reload(unknown).state == State.IN_SERVICE and not reload(unknown).history.exists()
    assert reload(seen).state == State.LOST and result.lost == 1


def test_a_vm_destroyed_behind_the_portals_back_is_replaced_up_to_min(
    vc, service, make_instance, lab_settings, django_capture_on_commit_callbacks
):
    """The reconcile finds the VM gone; the evaluator's next pass brings the service back to its minimum."""
    from events import evaluator
    from events.models import ScaleOutEvent, ScalingDecision

    AutoscalingConfig.objects.filter(pk=service.pk).update(enabled=True, min_instances=2)
    make_instance(service)
    gone = make_instance(service)
    vc.destroy_vm(gone.vm_moid)
    with django_capture_on_commit_callbacks(execute=False):
        assert fleet_reconcile(service=service.service_name).lost == 1
    assert reload(gone).state == State.LOST

    lab_settings("alertmanager")  # the evaluator reads the firing alerts (none here)
    with django_capture_on_commit_callbacks(execute=False):
        evaluator.evaluator_pass()

    (event,) = ScaleOutEvent.objects.filter(config=service)
    assert (event.source, event.vm_count) == (ScaleOutEvent.Source.REPLACE, 1)
    decision = event.decisions.get()
    assert decision.outcome == ScalingDecision.Outcome.REPLACE
    assert "1 instances running and 0 being created, minimum 2: replace 1 VM(s)" in decision.reason
