"""The portal's side of a scale-in build: its token lists, reports and releases the instances it removes, and only
those (the HTTP doors of events/api/pipeline.py, through Django's test client)."""

import pytest

from autoscaling.models import IpAllocation
from events.models import ScaleOutEvent
from fleet.models import ManagedInstance
from tests.pipeline.conftest import issue_callback_token

State = ManagedInstance.State


@pytest.fixture
def fleet(make_event, ip):
    """A service with two in-service instances (created by a scale-out) and a scale-in event removing the first."""
    added, _token = make_event()
    config = added.config
    instances = []
    for n, address in enumerate((ip(10), ip(11)), start=1):
        allocation = IpAllocation.objects.create(
            pool=config.ip_pool, address=address, state=IpAllocation.State.IN_USE, event=added, vm_name=f"web-{n}"
        )
        instances.append(
            ManagedInstance.objects.create(
                config=config,
                state=State.IN_SERVICE,
                vm_name=f"web-{n}",
                vcenter_uuid=f"uuid-{n}",
                ip_address=address,
                ip_allocation=allocation,
                f5_member=f"{address}:8080",
                created_by_event=added,
            )
        )
    event = ScaleOutEvent.objects.create(
        config=config,
        service_name=config.service_name,
        action=ScaleOutEvent.Action.SCALE_IN,
        status=ScaleOutEvent.Status.RUNNING,
    )
    ManagedInstance.objects.filter(pk=instances[0].pk).update(removed_by_event=event)
    token = issue_callback_token(event)
    return event, {"HTTP_AUTHORIZATION": f"Bearer {token}"}, instances


def test_the_scale_in_token_lists_the_instances_it_removes(client, fleet, ip):
    event, auth, instances = fleet
    answer = client.get(f"/api/events/{event.pk}/callback/instances", **auth)
    assert answer.status_code == 200
    assert answer.json()["results"] == [
        {
            "id": instances[0].pk,
            "state": "in_service",
            "ip_address": ip(10),
            "vm_name": "web-1",
            "vcenter_uuid": "uuid-1",
            "f5_member": f"{ip(10)}:8080",
            "leftover": "",
        }
    ]
    assert client.get(f"/api/events/{event.pk}/callback/instances").status_code == 401


def test_the_scale_in_token_releases_exactly_the_addresses_of_its_instances(client, fleet, ip):
    event, auth, instances = fleet
    url = f"/api/events/{event.pk}/callback/ip/release"
    other = client.post(url, {"address": ip(11)}, content_type="application/json", **auth)
    assert other.status_code == 409 and other.json()["code"] == "not_removed"
    assert f"{ip(11)} is not the address of an instance" in other.json()["detail"]
    answer = client.post(url, {"address": ip(10)}, content_type="application/json", **auth)
    assert answer.status_code == 200 and answer.json()["released"] == [ip(10)]
    again = client.post(url, {}, content_type="application/json", **auth)
    assert again.status_code == 200 and again.json()["released"] == []  # idempotent
    states = dict(IpAllocation.objects.values_list("address", "state"))
    assert states == {ip(10): IpAllocation.State.RELEASED, ip(11): IpAllocation.State.IN_USE}
    assert f"{ip(10)} released" in instances[0].history.last().reason


def test_the_scale_in_reports_its_instances_lifecycle_and_nothing_else(client, fleet, ip):
    event, auth, instances = fleet
    url = f"/api/events/{event.pk}/callback/instances/{instances[0].pk}"

    def report(body, instance=instances[0]):
        return client.post(
            f"/api/events/{event.pk}/callback/instances/{instance.pk}", body, content_type="application/json", **auth
        )

    assert report({"state": "draining", "reason": "disabled"}).json()["state"] == "draining"
    assert report({"state": "removing"}).json()["state"] == "removing"
    refused = report({"state": "provisioning"})
    assert refused.status_code == 400 and "state" in refused.json()["errors"]
    refused = report({"vm_name": "renamed"})
    assert refused.status_code == 400 and "vm_name" in refused.json()["errors"]
    assert report({"state": "draining"}, instance=instances[1]).status_code == 404  # not one it removes
    answer = report({"state": "failed", "leftover": f"VM web-1 destroyed; IP {ip(10)} still allocated"})
    assert answer.status_code == 200, answer.json()
    assert answer.json()["leftover"] == f"VM web-1 destroyed; IP {ip(10)} still allocated"
    assert client.post(url, {"state": "in_service"}, content_type="application/json", **auth).status_code == 409
    instances[1].refresh_from_db()
    assert instances[1].state == State.IN_SERVICE


def test_back_in_service_keeps_its_in_service_time(client, fleet):
    event, auth, instances = fleet
    instance = instances[0]
    ManagedInstance.objects.filter(pk=instance.pk).update(in_service_at="2026-01-01T00:00:00Z")
    url = f"/api/events/{event.pk}/callback/instances/{instance.pk}"
    for state in ("draining", "removing", "in_service"):
        assert client.post(url, {"state": state}, content_type="application/json", **auth).status_code == 200
    instance.refresh_from_db()
    assert instance.state == State.IN_SERVICE and instance.in_service_at.year == 2026
    assert instance.in_service_at.month == 1


def test_a_scale_out_token_cannot_report_scale_in_states(client, make_event):
    event, token = make_event()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    reserved = client.post(f"/api/events/{event.pk}/callback/ip/reserve", **auth).json()
    instance = client.post(
        f"/api/events/{event.pk}/callback/instances",
        {"address": reserved["address"]},
        content_type="application/json",
        **auth,
    ).json()
    answer = client.post(
        f"/api/events/{event.pk}/callback/instances/{instance['id']}",
        {"state": "draining"},
        content_type="application/json",
        **auth,
    )
    assert answer.status_code == 400 and "state" in answer.json()["errors"]
    listed = client.get(f"/api/events/{event.pk}/callback/instances", **auth).json()["results"]
    assert [i["id"] for i in listed] == [instance["id"]]
