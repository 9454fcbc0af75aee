"""Validation at the config doors: scrape targets only inside the allowed networks, VM name patterns with only
their documented fields and small widths (issue 16, item 4)."""

import ipaddress

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from autoscaling.models import AutoscalingConfig
from autoscaling.tests.test_api import config_body
from templates_app.models import VMTemplate
from tests.test_api_errors import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    client = APIClient()
    # An administrator: these doors change configs and pools.
    client.force_authenticate(get_user_model().objects.create(username="admin-doors", is_staff=True, is_superuser=True))
    return client


def post(api, template, **fields):
    return api.post("/api/autoscaling/configs", config_body(template, **fields), format="json")


@pytest.mark.parametrize(
    "target", ["10.0.10.21:9100", "169.254.169.254:80", "192.168.1.1:9100", "[::1]:9100", "metadata.internal:80"]
)
def test_a_scrape_target_outside_the_allowed_networks_is_refused(api, template, target):
    body = assert_error(post(api, template, monitored_instances=["127.0.0.1:9100", target]), 400, "invalid")
    (message,) = body["errors"]["monitored_instances"]
    assert target in message and ("MONITORED_NETWORKS" in message or "MONITORED_DOMAINS" in message), message
    assert not AutoscalingConfig.objects.exists()


def test_the_allowed_networks_and_domains_are_a_setting(api, template, settings):
    settings.MONITORED_NETWORKS = [ipaddress.ip_network("10.0.10.0/24")]
    settings.MONITORED_DOMAINS = ["svc.example.internal"]
    assert_error(post(api, template, monitored_instances=["127.0.0.1:9100"]), 400, "invalid")
    targets = ["10.0.10.21:9100", "web-1.svc.example.internal:9100"]
    response = post(api, template, monitored_instances=targets)
    assert response.status_code == 201, response.content
    body = assert_error(post(api, template, service_name="other", monitored_instances=["x.example.com:9100"]), 400)
    assert "svc.example.internal" in body["errors"]["monitored_instances"][0]


def test_the_lab_default_is_loopback(settings):
    assert [str(network) for network in settings.MONITORED_NETWORKS] == ["127.0.0.0/8"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("{n:0>999999999999999}", "wider than 8 digits"),
        ("{n:0>100000}", "wider than 8 digits"),
        ("{service}-{n:09d}", "wider than 8 digits"),
        ("{service}-{n.real}", "not a placeholder"),
        ("{service!r}-{n}", "not a placeholder"),
        ("{host}-{n}", "not a placeholder"),
        ("{0}-{n}", "not a placeholder"),
        ("{service:>70}-{n}", "not a format"),
        ("{service}-{n:x}", "not a format"),
        ("{service}-{n", "cannot be filled in"),
        ("{service}-{{n}}", "must contain {n}"),
    ],
)
def test_vm_name_patterns_take_only_their_fields_with_small_widths(api, template, pattern, reason):
    response = post(api, template, vm_name_pattern=pattern)
    body = assert_error(response, 400, "invalid")
    assert reason in body["errors"]["vm_name_pattern"][0], body
    assert len(response.content) < 2000
    assert not AutoscalingConfig.objects.exists()


@pytest.mark.parametrize("pattern", ["{service}-{n:03d}", "{service}-{n}", "vm-{n:0>8}", "{service}{n:_>4}x"])
def test_documented_patterns_still_work(api, template, pattern):
    response = post(api, template, vm_name_pattern=pattern)
    assert response.status_code == 201, response.content


@pytest.fixture
def prometheus(lab_settings):
    return lab_settings("prometheus")


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("rate(node_cpu_seconds_total[1x])", "bad duration"),
        ("avg(node_load1) node_load5", "unexpected identifier"),
        ("sum by (instance) (node_load1) +", "unexpected"),
        ("no_such_function(node_load1)", "unknown function"),
    ],
)
def test_promql_that_prometheus_cannot_parse_is_refused_at_save_time(api, template, prometheus, expression, reason):
    body = assert_error(post(api, template, promql_expression=expression), 400, "invalid")
    (message,) = body["errors"]["promql_expression"]
    assert message.startswith("Prometheus cannot parse the expression") and reason in message, message
    assert not AutoscalingConfig.objects.exists()


def test_promql_that_parses_is_saved_and_checked_again_only_when_it_changes(api, template, prometheus):
    expression = "100 * avg by (service) (rate(node_cpu_seconds_total{mode!='idle'}[1m]))"
    created = post(api, template, promql_expression=expression)
    assert created.status_code == 201, created.content
    url = f"/api/autoscaling/configs/{created.json()['id']}"
    assert api.patch(url, {"threshold": 70}, format="json").status_code == 200
    body = assert_error(api.patch(url, {"promql_expression": "avg(node_load1[5m)"}, format="json"), 400)
    assert "promql_expression" in body["errors"]
    assert AutoscalingConfig.objects.get().promql_expression == expression


def test_promql_is_saved_when_prometheus_cannot_be_asked(api, template, settings):
    # The pass validates the rule file with promtool on the host before it swaps it in.
    settings.PROMETHEUS_URL = "http://127.0.0.1:1"
    response = post(api, template, promql_expression="avg(node_load1)")
    assert response.status_code == 201, response.content


# --- issue 17: every error at once; templates and pools by name; an enabled config needs an F5 pool ------------
def test_one_request_reports_every_error_at_once(api, template, pool):
    template.status = VMTemplate.Status.CONVERTING
    template.save()
    pool.excluded_addresses = [f"127.77.0.{n}" for n in range(10, 28)]  # 2 usable addresses
    pool.save()
    body = config_body(
        template,
        ip_pool=pool.pk,
        threshold="high",  # a field error
        policy_type="predictive",  # a field error
        min_instances=5,
        max_instances=3,  # cross-field: below the minimum; and more than the pool holds
        vm_name_pattern="{host}-{n}",
        f5_pool="",
        enabled=True,  # an enabled config needs an F5 pool
        max_instance=9,  # a misspelt field
    )
    response = api.post("/api/autoscaling/configs", body, format="json")
    errors = assert_error(response, 400, "invalid")["errors"]
    assert {
        "threshold",
        "policy_type",
        "max_instances",
        "template",
        "ip_pool",
        "vm_name_pattern",
        "f5_pool",
        "max_instance",
    } <= set(errors), errors
    assert "must not be below the minimum" in errors["max_instances"][0]
    assert "only a ready template" in errors["template"][0]
    assert "fewer than the maximum of 3" in errors["ip_pool"][0]
    assert errors["max_instance"] == ["Unknown field."]
    assert not AutoscalingConfig.objects.exists()


def test_a_change_reports_every_error_at_once_and_changes_nothing(api, template):
    created = post(api, template)
    url = f"/api/autoscaling/configs/{created.json()['id']}"
    change = {"threshold": "x", "scale_out_step": 9, "max_instances": 3, "enabled": True, "f5_pool": ""}
    errors = assert_error(api.patch(url, change, format="json"), 400)["errors"]
    assert {"threshold", "scale_out_step", "f5_pool"} <= set(errors), errors
    config = AutoscalingConfig.objects.get()
    assert (config.threshold, config.max_instances, config.enabled, config.f5_pool) == (80, 4, False, "web-pool")


def test_templates_and_pools_are_named_by_name_or_id(api, template, pool):
    response = api.post(
        "/api/autoscaling/configs",
        {**config_body(template, ip_pool=pool.name), "template": template.name},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["template"] == template.pk and response.json()["ip_pool"] == pool.pk
    by_id = post(api, template, service_name="by-id", ip_pool=str(pool.pk))
    assert by_id.status_code == 201, by_id.content
    unknown = {**config_body(template, service_name="nope"), "template": "no-such-template"}
    errors = assert_error(api.post("/api/autoscaling/configs", unknown, format="json"), 400)["errors"]
    assert errors["template"] == ["There is no VM template named “no-such-template”."]


def test_an_enabled_config_needs_an_f5_pool(api, template):
    errors = assert_error(post(api, template, enabled=True, f5_pool=""), 400)["errors"]
    assert "needs an F5 pool" in errors["f5_pool"][0]
    created = post(api, template, f5_pool="")
    assert created.status_code == 201, created.content  # a disabled draft may leave it empty
    body = assert_error(api.post(f"/api/autoscaling/configs/{created.json()['id']}/enable"), 400)
    assert "needs an F5 pool" in body["errors"]["f5_pool"][0]
    assert not AutoscalingConfig.objects.get().enabled
