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


def test_scale_in_drains_then_removes_the_member_destroys_the_vm_and_releases_the_ip(pipeline, monkeypatch):
    config, instance = pipeline.scale_out()
    member = instance.f5_member
    assert member == "127.0.100.10:8080"
    # 30 connections, ending at 20 a second once the member is disabled: it drains in ~1.5 s, before the deadline.
    pipeline.f5.set_member_connections(config.f5_pool, member, 30, decay_per_second=20)
    requests = provisioning_requests(monkeypatch)
    started = time.time()

    event = pipeline.scale_in(config, [instance], drain_timeout=60)

    assert event.status == Status.SUCCEEDED, (event.error, pipeline.console(event))
    assert event.vm_names == [instance.vm_name] and event.vm_ips == ["127.0.100.10"]
    steps = steps_of(event)
    assert [s for s in SCALE_IN if steps[s].status == EventAction.Status.SUCCEEDED] == SCALE_IN
    assert not set(SCALE_IN_UNDO) & set(steps)
    assert steps[Step.F5_DRAIN].details["timed_out"] is False
    assert 1.0 <= steps[Step.F5_DRAIN].details["drain_seconds"] < 60
    # The member was disabled, then drained, then forced offline, and only then removed: with no connection left.
    removed = pipeline.f5.removed(config.f5_pool)
    assert [(r["member"], r["session"], r["state"], r["connections"]) for r in removed] == [
        (member, "user-disabled", "user-down", 0)
    ]
    assert removed[0]["time"] >= started + 1.5
    patches = [c["body"] for c in pipeline.f5.calls(path_contains=config.f5_pool, method="PATCH")]
    assert [p for p in patches] == [
        '{"session": "user-disabled"}',
        '{"session": "user-disabled", "state": "user-down"}',
    ]
    assert pipeline.f5.members(config.f5_pool) == {}
    assert "/Common/127.0.100.10" not in pipeline.f5.state()["nodes"]  # no other pool used the node
    # The VM is gone from the simulator, the address back in the pool, the instance removed.
    assert pipeline.vcenter.find_vm(instance.vm_name) is None
    allocation = IpAllocation.objects.get(pool=config.ip_pool, address="127.0.100.10")
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
