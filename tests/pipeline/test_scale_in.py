"""The scale-in pipeline end to end: a scale-in event (action scale_in, its instances' removed_by_event set) is
triggered as the portal triggers one, the Jenkins stand-in runs the scale-in stages of jenkins/Jenkinsfile.autoscale
(chosen by ACTION) with the real step commands against the vCenter simulator, the F5 stand-in and this portal."""

import time

import pytest

from autoscaling.models import IpAllocation
from events.models import EventAction, ScaleOutEvent
from fleet.models import ManagedInstance
from tests.pipeline.conftest import SCALE_IN, SCALE_IN_UNDO

State = ManagedInstance.State
Step = EventAction.Step
Status = ScaleOutEvent.Status
pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def steps_of(event):
    return {a.step: a for a in EventAction.objects.filter(event=event)}


def history(instance):
    return list(instance.history.exclude(to_state="").order_by("at", "pk").values_list("from_state", "to_state"))


def provisioning_requests(monkeypatch):
    """The reasons of the provisioning passes the portal asks for (the real request, recorded on its way)."""
    from autoscaling import services as autoscaling_services

    reasons = []
    real = autoscaling_services.provisioning_request_on_commit

    def record(*, reason):
        reasons.append(reason)
        return real(reason=reason)

    monkeypatch.setattr(autoscaling_services, "provisioning_request_on_commit", record)
    import fleet.services

    monkeypatch.setattr(fleet.services, "provisioning_request_on_commit", record)
    import autoscaling.ipam

    monkeypatch.setattr(autoscaling.ipam, "provisioning_request_on_commit", record)
    return reasons


def test_scale_in_drains_then_removes_the_member_destroys_the_vm_and_releases_the_ip(pipeline, monkeypatch, ip):
    config, instance = pipeline.scale_out()
    member = instance.f5_member
    assert member == f"{ip(10)}:8080"
    # 30 connections, ending at 20 a second once the member is disabled: it drains in ~1.5 s, before the deadline.
    pipeline.f5.set_member_connections(config.f5_pool, member, 30, decay_per_second=20)
    requests = provisioning_requests(monkeypatch)
    started = time.time()

    event = pipeline.scale_in(config, [instance], drain_timeout=60)

    assert event.status == Status.SUCCEEDED, (event.error, pipeline.console(event))
    assert event.vm_names == [instance.vm_name] and event.vm_ips == [ip(10)]
    steps = steps_of(event)
    assert [s for s in SCALE_IN if steps[s].status == EventAction.Status.SUCCEEDED] == SCALE_IN
    assert not set(SCALE_IN_UNDO) & set(steps)
    assert steps[Step.F5_DRAIN].details["timed_out"] is False
    assert 0 < steps[Step.F5_DRAIN].details["drain_seconds"] < 60
    # The member was disabled, then drained, then forced offline, and only then removed: with no connection left.
    removed = pipeline.f5.removed(config.f5_pool)
    assert [(r["member"], r["session"], r["state"], r["connections"]) for r in removed] == [
        (member, "user-disabled", "user-down", 0)
    ]
    disabled = next(c["time"] for c in pipeline.f5.calls(path_contains=config.f5_pool, method="PATCH"))
    assert started < disabled and removed[0]["time"] >= disabled + 1.4  # 30 connections at 20 a second
    patches = [c["body"] for c in pipeline.f5.calls(path_contains=config.f5_pool, method="PATCH")]
    assert [p for p in patches] == [
        '{"session": "user-disabled"}',
        '{"session": "user-disabled", "state": "user-down"}',
    ]
    assert pipeline.f5.members(config.f5_pool) == {}
    # The node went with its last member: it stays only while a member of another pool still uses it.
    state = pipeline.f5.state()
    others = [
        name
        for name, pool in state["pools"].items()
        if name != f"/Common/{config.f5_pool}" and any(m["address"] == ip(10) for m in pool["members"].values())
    ]
    assert (f"/Common/{ip(10)}" in state["nodes"]) == bool(others), others
    # The VM is gone from the simulator, the address back in the pool, the instance removed.
    assert pipeline.vcenter.find_vm(instance.vm_name) is None
    allocation = IpAllocation.objects.get(pool=config.ip_pool, address=ip(10))
    assert allocation.state == IpAllocation.State.RELEASED
    instance.refresh_from_db()
    assert instance.state == State.REMOVED and instance.removed_at and instance.leftover == ""
    assert history(instance)[-3:] == [
        (State.IN_SERVICE, State.DRAINING),
        (State.DRAINING, State.REMOVING),
        (State.REMOVING, State.REMOVED),
    ]
    # The portal asked for a provisioning pass when the instance left the live fleet (its scrape target goes).
    assert any(f"instance {instance.pk} removing -> removed" in reason for reason in requests), requests


def test_a_vm_already_gone_from_vcenter_is_removed_not_rolled_back(pipeline):
    """A VM deleted outside the portal (or forgotten by a restarted vCenter) before the reconcile saw it: the
    scale-in's goal is met, so it goes on (nothing to shut down or destroy), releases the address and ends with the
    instance removed; it never "puts back in service" a VM that does not exist."""
    config, instance = pipeline.scale_out()
    vm = pipeline.vcenter.find_vm(instance.vm_name)
    pipeline.vcenter.destroy_vm(vm.moid, power_off=True)

    event = pipeline.scale_in(config, [instance], drain_timeout=5)

    assert event.status == Status.SUCCEEDED, (event.error, pipeline.console(event))
    steps = steps_of(event)
    assert [s for s in SCALE_IN if steps[s].status == EventAction.Status.SUCCEEDED] == SCALE_IN
    assert not set(SCALE_IN_UNDO) & set(steps)
    assert "already gone from vCenter" in steps[Step.VM_SHUTDOWN].message
    assert steps[Step.VM_DESTROY].details["gone"] == [instance.vm_name]
    instance.refresh_from_db()
    assert instance.state == State.REMOVED and instance.leftover == ""
    allocation = IpAllocation.objects.get(pool=config.ip_pool, address=instance.ip_address)
    assert allocation.state == IpAllocation.State.RELEASED


def test_the_deadline_forces_a_member_that_never_drains_offline(pipeline):
    """Connections that never end: the member stays in the pool, polled, until DRAIN_TIMEOUT; then it is forced
    offline and removed with its connections, and the drain step says it timed out."""
    config, instance = pipeline.scale_out()
    member = instance.f5_member
    pipeline.f5.set_member_connections(config.f5_pool, member, 7, never_drain=True)

    event = pipeline.scale_in(config, [instance], drain_timeout=2)

    assert event.status == Status.SUCCEEDED, (event.error, pipeline.console(event))
    drain = steps_of(event)[Step.F5_DRAIN]
    assert drain.details["timed_out"] is True and drain.details["connections_left"] == {member: 7}
    assert 2.0 <= drain.details["drain_seconds"] < 10
    assert "Drain timeout of 2 s reached" in drain.message
    removed = pipeline.f5.removed(config.f5_pool)
    assert [(r["session"], r["state"], r["connections"]) for r in removed] == [("user-disabled", "user-down", 7)]
    # Never removed before the deadline: the member was polled (with connections) for the whole drain, and the
    # DELETE came only after it, and after the force offline.
    calls = pipeline.f5.calls(path_contains=config.f5_pool)
    disabled = next(c["time"] for c in calls if c["method"] == "PATCH" and "user-disabled" in (c["body"] or ""))
    offline = next(c["time"] for c in calls if c["method"] == "PATCH" and "user-down" in (c["body"] or ""))
    deleted = next(c["time"] for c in calls if c["method"] == "DELETE" and "/members/" in c["path"])
    polls = [c["time"] for c in calls if c["path"].endswith("/stats") and disabled < c["time"] < offline]
    assert len(polls) >= 3 and polls[-1] - disabled >= 1.9
    assert disabled + 2.0 <= offline < deleted
    instance.refresh_from_db()
    assert instance.state == State.REMOVED
    reasons = list(instance.history.values_list("reason", flat=True))
    assert any("Drain timeout (2 s) reached with 7 connection(s) left" in reason for reason in reasons)


@pytest.fixture
def vcenter_proxy(pipeline):
    """The simulator behind a proxy that can drop the next connections (the pipeline's VCENTER_URL)."""
    from tests.pipeline.conftest import TcpProxy

    info = pipeline.lab.info("vcsim")
    proxy = TcpProxy(info["port"])
    proxy.url = info["url"].replace(f":{info['port']}", f":{proxy.port}")
    yield proxy
    proxy.close()


BEFORE_DESTROY = {
    # step (held in its "running" report; several share a stage's command): the fault injected while it is held
    Step.F5_DISABLE: ("f5", {"method": "PATCH", "path": "/members/"}),
    Step.F5_DRAIN: ("f5", {"method": "GET", "path": "/stats", "count": None}),
    Step.F5_OFFLINE: ("f5", {"method": "PATCH", "path": "/members/"}),
    Step.F5_REMOVE: ("f5", {"method": "DELETE", "path": "/members/"}),
    Step.VM_SHUTDOWN: ("vcenter", 1),
    Step.VM_DESTROY: ("vcenter", 1),
}


@pytest.mark.parametrize("failed_step", list(BEFORE_DESTROY))
def test_a_failure_before_the_vm_is_destroyed_puts_the_instance_back_in_service(
    pipeline, vcenter_proxy, portal_proxy, failed_step, ip
):
    system, fault = BEFORE_DESTROY[failed_step]
    config, instance = pipeline.scale_out()
    member = instance.f5_member

    def inject(event):
        portal_proxy.wait_held()
        if system == "f5":
            pipeline.f5.fail_next(**{"count": 1, "status": 503, **fault})
        else:
            vcenter_proxy.drop_next(fault)
        portal_proxy.release()
        if system == "f5" and fault.get("count", 1) is None:
            pipeline._wait_for("the step to fail", lambda: failed(event))
            pipeline.f5.clear_faults()

    def failed(event):
        return EventAction.objects.filter(event=event, step=failed_step, status=EventAction.Status.FAILED).exists()

    portal_proxy.hold_before(failed_step)
    behaviour = {"env": {"VCENTER_URL": vcenter_proxy.url, "PORTAL_TIMEOUT": "60"}}
    try:
        event = pipeline.scale_in(config, [instance], drain_timeout=5, behaviour=behaviour, during=inject)
    finally:
        pipeline.f5.clear_faults()

    assert event.status == Status.ROLLED_BACK, (event.status, event.error, pipeline.console(event))
    assert event.failed_step == failed_step
    steps = steps_of(event)
    assert steps[failed_step].status == EventAction.Status.FAILED
    assert steps[Step.ROLLBACK_F5_ENABLE].status == EventAction.Status.SUCCEEDED, steps[Step.ROLLBACK_F5_ENABLE]
    before, later = SCALE_IN[: SCALE_IN.index(failed_step)], SCALE_IN[SCALE_IN.index(failed_step) + 1 :]
    assert [steps[step].status for step in before] == [EventAction.Status.SUCCEEDED] * len(before)
    assert not set(later) & set(steps)  # nothing after the failing step ran, even in the same command
    # Everything as before: the member enabled in the pool, the VM on, the address in use, the instance in service.
    members = pipeline.f5.members(config.f5_pool)
    assert list(members) == [member]
    assert members[member]["session"] == "user-enabled" and members[member]["state"] == "up"
    vm = pipeline.vcenter.find_vm(instance.vm_name)
    assert vm is not None and vm.powered_on
    allocation = IpAllocation.objects.get(pool=config.ip_pool, address=ip(10))
    assert allocation.state == IpAllocation.State.IN_USE
    before = instance.in_service_at
    instance.refresh_from_db()
    assert instance.state == State.IN_SERVICE and instance.leftover == ""
    assert instance.in_service_at == before  # back in service, not a new VM warming up
    moves = history(instance)
    assert moves[-1][1] == State.IN_SERVICE
    if failed_step != Step.F5_DISABLE:  # disabled (draining), maybe drained (removing), then back in service
        assert (State.IN_SERVICE, State.DRAINING) in moves and moves[-1][0] in (State.DRAINING, State.REMOVING)


AFTER_DESTROY = {
    # step (the portal unreachable from its "running" report on): what is left, the address's state then
    Step.IP_RELEASE: ("VM {vm} destroyed; IP {address} still allocated", IpAllocation.State.IN_USE),
    Step.MONITORING_REMOVE: ("VM {vm} destroyed", IpAllocation.State.RELEASED),
}


@pytest.mark.parametrize("failed_step", list(AFTER_DESTROY))
def test_a_failure_after_the_vm_is_destroyed_records_exactly_what_is_left(pipeline, portal_proxy, failed_step, ip):
    """The portal cannot be reached for a step after the VM is gone: the undo cannot put the instance back; it
    records exactly what is left, on the instance and in the event."""
    left, address_state = AFTER_DESTROY[failed_step]
    config, instance = pipeline.scale_out()

    def inject(event):
        portal_proxy.wait_held()
        portal_proxy.drop_next(3)  # the step's three attempts at its first report, the held one first
        portal_proxy.release()

    portal_proxy.hold_before(failed_step)
    event = pipeline.scale_in(config, [instance], behaviour={"env": {"PORTAL_TIMEOUT": "60"}}, during=inject)

    expected = left.format(vm=instance.vm_name, address=ip(10))
    assert event.status == Status.FAILED, (event.status, event.error, pipeline.console(event))
    assert event.failed_step == failed_step and "could not be reached" in event.error
    assert event.error.endswith(f"Left: {expected}.")
    assert portal_proxy.dropped == 3
    instance.refresh_from_db()
    assert instance.state == State.FAILED and instance.leftover == expected
    assert history(instance)[-1] == (State.REMOVING, State.FAILED)
    assert pipeline.vcenter.find_vm(instance.vm_name) is None
    assert pipeline.f5.members(config.f5_pool) == {}
    allocation = IpAllocation.objects.get(pool=config.ip_pool, address=ip(10))
    assert allocation.state == address_state  # what the orphan sweep will find, as recorded
    assert steps_of(event)[Step.ROLLBACK_F5_ENABLE].details["leftovers"] == [expected]
