"""An operator removes an instance (API and admin action) through the scale-in path, and protects or unprotects one."""

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import ScaleOutEvent, ScalingDecision
from fleet.models import InstanceChange, ManagedInstance

pytestmark = pytest.mark.django_db
State = ManagedInstance.State


@pytest.fixture
def fleet(make_config):
    config = make_config(min_instances=1, max_instances=4, monitored_instances=[])
    now = timezone.now()
    instances = [
        ManagedInstance.objects.create(
            config=config, state=State.IN_SERVICE, vm_name=f"vm-{n}", in_service_at=now - timedelta(seconds=5)
        )
        for n in range(2)
    ]
    return config, instances


def remove(client, pk, **body):
    return client.post(f"/api/autoscaling/instances/{pk}/remove", body, content_type="application/json")


def test_the_api_removes_an_instance_through_a_manual_scale_in_event(admin_client, admin_user, fleet):
    config, (first, second) = fleet
    # Warm-up and cooldowns do not hold an operator back; min does.
    response = remove(admin_client, first.pk, reason="retire the old one")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["action"], body["source"], body["vm_count"]) == ("scale_in", "manual", 1)
    event = ScaleOutEvent.objects.get(pk=body["id"])
    assert (event.requested_by, event.reason) == (admin_user, "retire the old one")
    assert list(event.instances_removed.all()) == [first]
    assert event.decisions.get().outcome == ScalingDecision.Outcome.SCALE_IN

    # Again: already being removed. The other one: it would cross min (the first no longer counts).
    again = remove(admin_client, first.pk)
    assert again.status_code == 409
    assert again.json()["detail"] == f"Instance #{first.pk} is already being removed by event #{event.pk}."
    below = remove(admin_client, second.pk)
    assert below.status_code == 409 and below.json()["outcome"] == "at_min"
    assert "the minimum is 1" in below.json()["detail"]
    assert ManagedInstance.objects.get(pk=second.pk).removed_by_event is None
    assert ScaleOutEvent.objects.count() == 1


def test_an_instance_not_in_service_or_unknown_is_refused(admin_client, fleet):
    config, (first, _second) = fleet
    ManagedInstance.objects.filter(pk=first.pk).update(state=State.PROVISIONING)
    response = remove(admin_client, first.pk)
    assert response.status_code == 409
    assert response.json() | {"decision": 0} == {
        "detail": f"Instance #{first.pk} is Provisioning, not in service: only an instance in service can be removed.",
        "code": "not_scaled",
        "errors": {},
        "outcome": "no_candidate",
        "decision": 0,
    }
    missing = remove(admin_client, 999999)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = remove(admin_client, first.pk, reason="x" * 1001)
    assert bad.status_code == 400 and "reason" in bad.json()["errors"]
    assert not ScaleOutEvent.objects.exists()


def test_protect_and_unprotect_through_the_api(admin_client, fleet):
    _config, (first, _second) = fleet
    response = admin_client.post(f"/api/autoscaling/instances/{first.pk}/protect")
    assert response.status_code == 200 and response.json()["protected_from_scale_in"] is True
    assert admin_client.post(f"/api/autoscaling/instances/{first.pk}/protect").status_code == 200  # idempotent
    assert InstanceChange.objects.filter(instance=first, reason="Protected from scale-in.").count() == 1
    response = admin_client.post(f"/api/autoscaling/instances/{first.pk}/unprotect")
    assert response.json()["protected_from_scale_in"] is False
    assert admin_client.post("/api/autoscaling/instances/999999/protect").status_code == 404


def test_the_admin_action_removes_the_selected_instances_or_says_why_not(admin_client, fleet):
    config, (first, second) = fleet
    response = admin_client.post(
        "/admin/fleet/managedinstance/",
        {"action": "remove", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    text = [str(m) for m in response.context["messages"]]
    assert text[0].startswith("Remove 1 VM at an operator&#x27;s request: 2 instances in service, minimum 1.")
    assert "Scale-in event #" in text[0]
    assert "the minimum is 1, so no VM is removed" in text[1]
    assert ManagedInstance.objects.get(pk=first.pk).removed_by_event is not None
    assert ManagedInstance.objects.get(pk=second.pk).removed_by_event is None
    # The events list tells scale-ins apart.
    event = ManagedInstance.objects.get(pk=first.pk).removed_by_event
    page = admin_client.get("/admin/events/scaleoutevent/", {"action__exact": "scale_in"})
    assert page.status_code == 200 and list(page.context["cl"].result_list) == [event]
    assert (
        admin_client.get("/admin/events/scaleoutevent/", {"action__exact": "scale_out"}).context["cl"].result_count == 0
    )
