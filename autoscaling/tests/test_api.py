"""The autoscaling REST API: configs, enable/disable, IP pools with usage, sync requests; refusals name the field."""

import pytest
from rest_framework.test import APIClient

from access import roles
from access.tests.helpers import role_user
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProvisioningRun
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    user = role_user(roles.ADMINISTRATOR, username="operator")
    client = APIClient()
    client.force_authenticate(user)
    return client


def config_body(template, **fields):
    return {
        "service_name": "web",
        "template": template.pk,
        "metric": "cpu",
        "threshold": 80,
        "duration_seconds": 120,
        "min_instances": 1,
        "max_instances": 4,
        "monitored_instances": ["127.0.0.1:9100"],
        "f5_pool": "web-pool",
        **fields,
    }


def test_anonymous_requests_are_refused(template):
    assert APIClient().get("/api/autoscaling/configs").status_code in (401, 403)


def test_config_crud_and_enable_disable(api, template, pool):
    created = api.post("/api/autoscaling/configs", config_body(template, ip_pool=pool.pk), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["sync_state"] == "pending" and body["enabled"] is False
    assert body["jenkins_job_name"] == "vmautoscale-web"
    config_id = body["id"]

    listed = api.get("/api/autoscaling/configs").json()
    assert [c["service_name"] for c in listed["results"]] == ["web"]
    assert api.get(f"/api/autoscaling/configs/{config_id}").json()["template_name"] == template.name

    patched = api.patch(f"/api/autoscaling/configs/{config_id}", {"threshold": 65}, format="json")
    assert patched.status_code == 200 and patched.json()["threshold"] == 65
    replaced = api.put(f"/api/autoscaling/configs/{config_id}", config_body(template, threshold=70), format="json")
    assert replaced.status_code == 200 and replaced.json()["threshold"] == 70

    assert api.post(f"/api/autoscaling/configs/{config_id}/enable").json()["enabled"] is True
    assert AutoscalingConfig.objects.get(pk=config_id).enabled
    assert api.post(f"/api/autoscaling/configs/{config_id}/disable").json()["enabled"] is False

    preview = api.get(f"/api/autoscaling/configs/{config_id}/preview").json()
    assert "vmautoscale-web" in preview["rule"] and "> 70" in preview["rule"]
    assert "/api/webhook/autoscale/web" in preview["route"] and "********" in preview["route"]
    assert "<name>CALLBACK_TOKEN</name>" in preview["job"]

    assert api.delete(f"/api/autoscaling/configs/{config_id}").status_code == 204
    assert not AutoscalingConfig.objects.filter(pk=config_id).exists()


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"min_instances": 5, "max_instances": 2}, "max_instances", "must not be below the minimum"),
        ({"threshold": 0}, "threshold", ""),
        ({"threshold": 150}, "threshold", ""),
        ({"service_name": "Web_App"}, "service_name", "lowercase"),
        ({"service_name": "web-"}, "service_name", "lowercase"),
        ({"f5_pool": "pool with spaces"}, "f5_pool", "BIG-IP name"),
        ({"f5_partition": "-x"}, "f5_partition", "BIG-IP name"),
        ({"monitored_instances": ["127.0.0.1"]}, "monitored_instances", "host:port"),
        ({"monitored_instances": ["127.0.0.1:99999"]}, "monitored_instances", "port"),
        ({"promql_expression": "rate(node_cpu_seconds_total[1m]"}, "promql_expression", "never closed"),
        ({"promql_expression": "sum(x)}"}, "promql_expression", "Unexpected '}'"),
        ({"promql_expression": "node_load1 > 3"}, "promql_expression", "comparison"),
        ({"vm_name_pattern": "{service}"}, "vm_name_pattern", "{n}"),
        ({"scale_out_step": 5, "max_instances": 3}, "scale_out_step", "maximum"),
        ({"policy_type": "target_tracking"}, "target_value", "needs a target value"),
        ({"policy_type": "target_tracking", "target_value": 120}, "target_value", ""),
        (
            {"policy_type": "target_tracking", "target_value": 60, "max_scale_out_step": 9},
            "max_scale_out_step",
            "maximum",
        ),
        ({"policy_type": "predictive"}, "policy_type", ""),
        ({"scale_in_threshold": 80}, "scale_in_threshold", "below the scale-out threshold (80 %)"),
        ({"scale_in_threshold": -1}, "scale_in_threshold", ""),
        ({"scale_in_step": 0}, "scale_in_step", ""),
        ({"scale_in_step": 5, "max_instances": 3}, "scale_in_step", "maximum"),
        ({"scale_in_duration_seconds": 90000}, "scale_in_duration_seconds", "24 hours"),
        ({"scale_in_order": "random"}, "scale_in_order", ""),
        ({"drain_timeout_seconds": 0}, "drain_timeout_seconds", ""),
        ({"drain_timeout_seconds": 3601}, "drain_timeout_seconds", "3600"),
    ],
)
def test_invalid_configs_get_400_naming_the_field(api, template, fields, field, reason):
    response = api.post("/api/autoscaling/configs", config_body(template, **fields), format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors, errors
    assert reason in " ".join(errors[field])
    assert not AutoscalingConfig.objects.exists()


def test_a_template_that_is_not_ready_is_refused(api, template):
    template.status = VMTemplate.Status.CONVERTING
    template.save()
    response = api.post("/api/autoscaling/configs", config_body(template), format="json")
    assert response.status_code == 400
    assert "only a ready template" in response.json()["errors"]["template"][0]


def test_a_pool_smaller_than_the_maximum_is_refused(api, template, pool):
    pool.excluded_addresses = [f"127.77.0.{n}" for n in range(10, 28)]  # 20 addresses, 18 excluded
    pool.save()
    response = api.post(
        "/api/autoscaling/configs", config_body(template, ip_pool=pool.pk, max_instances=3), format="json"
    )
    assert response.status_code == 400
    assert "2 usable addresses, fewer than the maximum of 3" in response.json()["errors"]["ip_pool"][0]


def test_enabling_with_a_missing_template_is_refused_but_disabling_works(api, template):
    config_id = api.post("/api/autoscaling/configs", config_body(template), format="json").json()["id"]
    VMTemplate.objects.filter(pk=template.pk).update(status=VMTemplate.Status.MISSING)
    response = api.post(f"/api/autoscaling/configs/{config_id}/enable")
    assert response.status_code == 400 and "template" in response.json()["errors"]
    assert api.post(f"/api/autoscaling/configs/{config_id}/disable").status_code == 200


def test_ip_pool_crud_with_usage(api):
    body = {
        "name": "lab-pool",
        "network": "127.88.0.0/24",
        "first_address": "127.88.0.10",
        "last_address": "127.88.0.19",
        "gateway": "127.88.0.1",
        "dns_servers": ["127.0.0.53"],
        "excluded_addresses": ["127.88.0.11"],
        "ping_check": False,
    }
    created = api.post("/api/autoscaling/ip-pools", body, format="json")
    assert created.status_code == 201, created.json()
    pool = IpPool.objects.get(pk=created.json()["id"])
    IpAllocation.objects.create(pool=pool, address="127.88.0.10", state=IpAllocation.State.IN_USE)
    IpAllocation.objects.create(pool=pool, address="127.88.0.12", state=IpAllocation.State.RESERVED)
    IpAllocation.objects.create(pool=pool, address="127.88.0.13", state=IpAllocation.State.RELEASED)
    data = api.get(f"/api/autoscaling/ip-pools/{pool.pk}").json()
    assert (data["size"], data["used"], data["free"]) == (9, 2, 7)
    assert data["prefix_length"] == 24 and data["netmask"] == "255.255.255.0"
    listed = api.get("/api/autoscaling/ip-pools").json()["results"]
    assert listed[0]["free"] == 7
    allocations = api.get(f"/api/autoscaling/ip-pools/{pool.pk}/allocations").json()["results"]
    assert [a["address"] for a in allocations] == ["127.88.0.10", "127.88.0.12", "127.88.0.13"]

    # Shrinking the range below an address in use is refused.
    response = api.patch(f"/api/autoscaling/ip-pools/{pool.pk}", {"first_address": "127.88.0.11"}, format="json")
    assert response.status_code == 400 and "127.88.0.10" in response.json()["errors"]["first_address"][0]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"network": "127.88.0.5/24"}, "network", "host bits"),
        ({"network": "not-a-net"}, "network", "CIDR"),
        ({"first_address": "127.89.0.10"}, "first_address", "outside the network"),
        ({"last_address": "127.88.0.255"}, "last_address", "broadcast"),
        ({"last_address": "127.88.0.5"}, "last_address", "must not come before"),
        ({"gateway": "127.88.0.15"}, "gateway", "inside the range"),
        ({"gateway": "127.99.0.1"}, "gateway", "outside the network"),
        ({"dns_servers": ["dns.example"]}, "dns_servers", "not an IPv4 address"),
        ({"excluded_addresses": ["127.88.0.200"]}, "excluded_addresses", "outside the range"),
    ],
)
def test_invalid_pools_get_400_naming_the_field(api, fields, field, reason):
    body = {
        "name": "bad-pool",
        "network": "127.88.0.0/24",
        "first_address": "127.88.0.10",
        "last_address": "127.88.0.19",
        "gateway": "127.88.0.1",
        **fields,
    }
    response = api.post("/api/autoscaling/ip-pools", body, format="json")
    assert response.status_code == 400
    assert reason in " ".join(response.json()["errors"][field])
    assert not IpPool.objects.exists()


def test_a_pool_in_use_cannot_be_deleted_or_shrunk_below_a_maximum(api, template, pool):
    api.post("/api/autoscaling/configs", config_body(template, ip_pool=pool.pk, max_instances=10), format="json")
    response = api.delete(f"/api/autoscaling/ip-pools/{pool.pk}")
    assert response.status_code == 409
    assert "used by the configs web" in response.json()["detail"]
    assert IpPool.objects.filter(pk=pool.pk).exists()
    response = api.patch(f"/api/autoscaling/ip-pools/{pool.pk}", {"last_address": "127.77.0.15"}, format="json")
    assert response.status_code == 400 and "needs up to 10 addresses" in response.json()["errors"]["last_address"][0]


def test_a_config_with_events_cannot_be_deleted(api, template):
    from events.models import ScaleOutEvent

    config_id = api.post("/api/autoscaling/configs", config_body(template), format="json").json()["id"]
    ScaleOutEvent.objects.create(config_id=config_id)
    response = api.delete(f"/api/autoscaling/configs/{config_id}")
    assert response.status_code == 409
    assert "disable it instead" in response.json()["detail"]


def test_sync_requests_coalesce(api, template, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        first = api.post("/api/autoscaling/sync")
        second = api.post("/api/autoscaling/sync")
    assert first.status_code == 202 and first.json()["queued"] is True
    assert second.json() == {"queued": False, "run": first.json()["run"]}
    assert OrmQ.objects.count() == 1
    assert ProvisioningRun.objects.get(pk=first.json()["run"]).status == ProvisioningRun.Status.QUEUED
    runs = api.get("/api/autoscaling/provisioning-runs").json()["results"]
    assert [r["id"] for r in runs] == [first.json()["run"]]


def test_schema_describes_the_autoscaling_api(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    for path in [
        "/api/autoscaling/configs",
        "/api/autoscaling/configs/{id}",
        "/api/autoscaling/configs/{id}/enable",
        "/api/autoscaling/configs/{id}/disable",
        "/api/autoscaling/ip-pools",
        "/api/autoscaling/ip-pools/{id}",
        "/api/autoscaling/sync",
    ]:
        assert path in schema["paths"], path


def test_a_target_tracking_config_round_trips(api, template):
    body = config_body(template, policy_type="target_tracking", target_value=60, max_scale_out_step=2)
    response = api.post("/api/autoscaling/configs", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["policy_type"], data["target_value"], data["max_scale_out_step"]) == ("target_tracking", 60.0, 2)
    config = AutoscalingConfig.objects.get()
    assert config.policy_type == AutoscalingConfig.PolicyType.TARGET_TRACKING and config.target_value == 60


def test_the_scale_in_fields_round_trip_with_their_defaults(api, template):
    response = api.post("/api/autoscaling/configs", config_body(template), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    defaults = {key: data[key] for key in data if key.startswith("scale_in_") or key == "drain_timeout_seconds"}
    assert defaults == {
        "scale_in_threshold": None,
        "scale_in_duration_seconds": 600,
        "scale_in_cooldown_seconds": 300,
        "scale_in_step": 1,
        "scale_in_order": "newest",
        "drain_timeout_seconds": 300,
    }
    body = {
        "scale_in_threshold": 25,
        "scale_in_duration_seconds": 120,
        "scale_in_cooldown_seconds": 90,
        "scale_in_step": 2,
        "scale_in_order": "oldest",
        "drain_timeout_seconds": 3600,
    }
    response = api.patch(f"/api/autoscaling/configs/{data['id']}", body, format="json")
    assert response.status_code == 200, response.json()
    config = AutoscalingConfig.objects.get()
    assert (config.scale_in_threshold, config.scale_in_step, config.scale_in_order) == (25, 2, "oldest")
    assert (config.scale_in_cooldown_seconds, config.drain_timeout_seconds) == (90, 3600)
