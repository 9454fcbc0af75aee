"""The inventory's doors: adoption on save and by migration, the pipeline's record endpoint, the API and the admin."""

import importlib
import secrets

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from autoscaling import services as autoscaling_services
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
from events import status as event_status
from events.models import ScaleOutEvent
from fleet import services
from fleet.models import InstanceChange, ManagedInstance
from fleet.selectors import config_fleet_counts
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db
State = ManagedInstance.State


@pytest.fixture
def template():
    return VMTemplate.objects.create(name="web-template", source_vm_name="web-0", status=VMTemplate.Status.READY)


@pytest.fixture
def pool():
    return IpPool.objects.create(
        name="web-pool", network="127.61.0.0/24", first_address="127.61.0.10", last_address="127.61.0.20"
    )


def create_config(template, pool, **fields):
    data = {"service_name": "web", "template": template, "ip_pool": pool, "min_instances": 1, "max_instances": 6}
    return autoscaling_services.config_create(data={**data, **fields})


def test_saving_a_config_adopts_its_monitored_instances_and_removes_unlisted_ones(template, pool, settings):
    settings.MONITORED_DOMAINS = ["example.com"]
    config = create_config(template, pool, monitored_instances=["127.61.1.1:9100", "web-2.example.com:9100"])
    adopted = {i.monitor_target: i for i in ManagedInstance.objects.filter(config=config)}
    assert set(adopted) == {"127.61.1.1:9100", "web-2.example.com:9100"}
    first = adopted["127.61.1.1:9100"]
    assert (first.origin, first.state, first.protected_from_scale_in) == ("adopted", State.IN_SERVICE, True)
    assert first.ip_address == "127.61.1.1" and adopted["web-2.example.com:9100"].ip_address is None
    assert config_fleet_counts(config=config).in_service == 2

    autoscaling_services.config_update(
        config=config, data={"monitored_instances": ["127.61.1.1:9100", "127.61.1.3:9100"]}
    )
    autoscaling_services.config_update(
        config=config, data={"monitored_instances": ["127.61.1.1:9100", "127.61.1.3:9100"]}
    )
    rows = ManagedInstance.objects.filter(config=config)
    assert sorted(rows.filter(state=State.IN_SERVICE).values_list("monitor_target", flat=True)) == [
        "127.61.1.1:9100",
        "127.61.1.3:9100",
    ]
    gone = rows.get(monitor_target="web-2.example.com:9100")
    assert gone.state == State.REMOVED
    changes = list(gone.history.values_list("to_state", "reason"))
    assert changes[-1][0] == State.REMOVED and "no longer one of the config's monitored instances" in changes[-1][1]
    assert rows.count() == 3  # saved twice: nothing adopted twice


def test_the_migration_adopts_the_monitored_instances_of_existing_configs(template):
    config = AutoscalingConfig.objects.create(
        service_name="old", template=template, monitored_instances=["127.61.2.1:9100", "127.61.2.2:9100"]
    )
    migration = importlib.import_module("fleet.migrations.0004_adopt_monitored_instances")
    migration.adopt(apps, None)
    migration.adopt(apps, None)  # again: nothing twice
    rows = ManagedInstance.objects.filter(config=config).order_by("monitor_target")
    assert [(r.monitor_target, r.ip_address, r.state, r.origin) for r in rows] == [
        ("127.61.2.1:9100", "127.61.2.1", State.IN_SERVICE, "adopted"),
        ("127.61.2.2:9100", "127.61.2.2", State.IN_SERVICE, "adopted"),
    ]
    assert all(r.protected_from_scale_in for r in rows)
    assert InstanceChange.objects.filter(instance__config=config, actor="migration").count() == 2


# --- the pipeline's record endpoint ------------------------------------------------------------------------
@pytest.fixture
def running_event(template, pool):
    config = create_config(template, pool)
    event = ScaleOutEvent.objects.create(config=config, service_name="web", status="running", vm_count=1)
    token = secrets.token_urlsafe(16)
    event.callback_token_hash = event_status.callback_token_hash(token)
    event.save(update_fields=["callback_token_hash"])
    IpAllocation.objects.create(pool=pool, address="127.61.0.10", event=event)
    IpAllocation.objects.create(pool=pool, address="127.61.0.11", event=event)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return event, client


def test_recording_an_instance_twice_gives_the_same_one_and_no_more_than_the_event_creates(running_event):
    event, client = running_event
    url = f"/api/events/{event.pk}/callback/instances"
    first = client.post(url, {"address": "127.61.0.10"}, format="json")
    again = client.post(url, {"address": "127.61.0.10"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["state"] == State.PENDING
    instance = ManagedInstance.objects.get()
    assert instance.ip_allocation.address == "127.61.0.10" and instance.created_by_event == event
    assert instance.template == event.config.template
    assert config_fleet_counts(config=event.config).creating == 1

    extra = client.post(url, {"address": "127.61.0.11"}, format="json")
    assert extra.status_code == 409 and extra.json()["code"] == "instance_limit"
    not_ours = client.post(url, {"address": "127.61.0.19"}, format="json")
    assert not_ours.status_code == 409 and not_ours.json()["code"] == "not_reserved"

    report = f"{url}/{instance.pk}"
    moved = client.post(report, {"state": "provisioning", "vm_name": "web-001", "vcenter_uuid": "u-1"}, format="json")
    assert moved.status_code == 200 and moved.json()["state"] == State.PROVISIONING
    repeated = client.post(report, {"state": "provisioning", "vm_name": "web-001"}, format="json")
    assert repeated.status_code == 200
    assert instance.history.count() == 2  # pending, provisioning: the repeat wrote nothing
    backwards = client.post(report, {"state": "in_service"}, format="json")
    assert backwards.status_code == 200
    refused = client.post(report, {"state": "provisioning"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"
    assert client.post(f"{url}/999999", {"state": "in_service"}, format="json").status_code == 404


def test_a_failed_step_fails_the_events_instances_and_the_undo_removes_them(running_event):
    from events import callbacks

    event, client = running_event
    client.post(f"/api/events/{event.pk}/callback/instances", {"address": "127.61.0.10"}, format="json")
    callbacks.event_step_report(event_id=event.pk, step="vm_clone", status="failed", message="no datastore X")
    instance = ManagedInstance.objects.get()
    assert instance.state == State.FAILED
    callbacks.event_step_report(event_id=event.pk, step="rollback_vm", status="skipped", message="Nothing to undo.")
    instance.refresh_from_db()
    assert instance.state == State.REMOVED
    reasons = list(instance.history.values_list("reason", flat=True))
    assert "no datastore X" in reasons[1] and "rollback_vm" in reasons[2]


# --- the API ---------------------------------------------------------------------------------------------
@pytest.fixture
def staff():
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def fleet(template, pool):
    web = create_config(template, pool, monitored_instances=["127.61.3.1:9100", "127.61.3.2:9100"])
    api_config = create_config(template, pool, service_name="api", monitored_instances=["127.61.4.1:9100"])
    event = ScaleOutEvent.objects.create(config=web, service_name="web", status="running")
    for n, state in enumerate(["pending", "in_service", "failed"]):
        ManagedInstance.objects.create(
            config=web, created_by_event=event, ip_address=f"127.61.0.{10 + n}", vm_name=f"web-00{n}", state=state
        )
    return web, api_config, event


def test_the_instance_list_filters_by_service_and_state_in_constant_queries(api, fleet, django_assert_num_queries):
    body = api.get("/api/autoscaling/instances").json()
    assert body["count"] == 6
    web = api.get("/api/autoscaling/instances", {"service": "web", "state": ["in_service", "pending"]}).json()
    assert sorted(i["vm_name"] or i["monitor_target"] for i in web["results"]) == [
        "127.61.3.1:9100",
        "127.61.3.2:9100",
        "web-000",
        "web-001",
    ]
    assert {i["service"] for i in web["results"]} == {"web"}
    paged = api.get("/api/autoscaling/instances", {"page_size": 2}).json()
    assert len(paged["results"]) == 2 and paged["next"]
    with django_assert_num_queries(2):  # the count, the page (with each row's config): nothing per row
        api.get("/api/autoscaling/instances", {"page_size": 2})
    with django_assert_num_queries(2):
        api.get("/api/autoscaling/instances", {"page_size": 6})
    bad = api.get("/api/autoscaling/instances", {"state": "sleeping"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid" and "state" in bad.json()["errors"]


def test_an_instance_answers_with_its_history(api, fleet):
    web, _api_config, _event = fleet
    instance = ManagedInstance.objects.get(config=web, monitor_target="127.61.3.1:9100")
    services.instance_protect(instance_id=instance.pk, protected=False)
    body = api.get(f"/api/autoscaling/instances/{instance.pk}").json()
    assert body["service"] == "web" and body["origin"] == "adopted" and body["protected_from_scale_in"] is False
    assert [h["to_state"] for h in body["history"]] == [State.IN_SERVICE, ""]
    assert "No longer protected" in body["history"][1]["reason"]
    missing = api.get("/api/autoscaling/instances/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


# --- the admin -------------------------------------------------------------------------------------------
@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def test_the_admin_lists_instances_shows_one_with_its_history_and_protects(admin_client, fleet):
    web, _api_config, event = fleet
    listing = admin_client.get(reverse("admin:fleet_managedinstance_changelist"), {"config__id__exact": web.pk})
    html = listing.content.decode()
    assert listing.status_code == 200 and "web-001" in html and "127.61.3.2" in html and "127.61.4.1" not in html
    assert reverse("admin:events_scaleoutevent_change", args=[event.pk]) in html
    instance = ManagedInstance.objects.get(vm_name="web-001")
    detail = admin_client.get(reverse("admin:fleet_managedinstance_change", args=[instance.pk]))
    assert detail.status_code == 200 and "web-001" in detail.content.decode()

    done = admin_client.post(
        reverse("admin:fleet_managedinstance_changelist"),
        {"action": "protect", "_selected_action": [instance.pk]},
        follow=True,
    )
    assert done.status_code == 200
    instance.refresh_from_db()
    assert instance.protected_from_scale_in
    change = instance.history.latest("at", "pk")
    assert change.reason == "Protected from scale-in." and change.user.username == "ops"

    config_page = admin_client.get(reverse("admin:autoscaling_autoscalingconfig_change", args=[web.pk]))
    page = config_page.content.decode()
    assert "In service: 3" in page and "Pending: 1" in page and "Failed: 1" in page
    assert f"?config__id__exact={web.pk}" in page
