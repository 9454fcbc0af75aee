"""The replay's API door (GET/POST /api/autoscaling/configs/<id>/replay) against a real Prometheus that holds a
recorded day (backfilled with promtool), and its refusals."""

import time

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from autoscaling.models import AutoscalingConfig
from events.models import ScaleOutEvent, ScalingDecision
from templates_app.models import VMTemplate
from tests.browser.support import closed_loopback_url
from tests.replay_support import backfilled_prometheus, cpu_expression, openmetrics

pytestmark = [pytest.mark.django_db]

SERVICE = "replay-api"
DAY = 86400
# The recording goes on at 40 % this long after the fixture's "now": a test of the module that runs later (a slow
# machine) still replays a whole day, its 90 % hour well inside.
AFTER = 3600


def recorded_day(now):
    """2 VMs at 40 %, with an hour at 90 % from 12 h before `now` (the recorded fleet never grew)."""
    start = now - DAY
    points = []
    for i in range((DAY + AFTER) // 60 + 1):
        ts = start + i * 60
        points.append((ts, 90.0 if now - 12 * 3600 <= ts < now - 11 * 3600 else 40.0))
    return points


@pytest.fixture(scope="module")
def prometheus_url():
    # "now" when the module's tests start, not when it was collected (a whole suite may run in between).
    points = recorded_day(time.time() // 60 * 60)
    with backfilled_prometheus(openmetrics(service=SERVICE, per_vm={"vm-a": points, "vm-b": points})) as url:
        yield url


@pytest.fixture
def config(settings, prometheus_url):
    settings.PROMETHEUS_URL = prometheus_url
    template = VMTemplate.objects.create(name="tpl-replay", status=VMTemplate.Status.READY)
    return AutoscalingConfig.objects.create(
        service_name=SERVICE,
        template=template,
        enabled=False,  # a replay is what an operator looks at before enabling
        metric="cpu",
        promql_expression=cpu_expression(SERVICE),
        threshold=70,
        duration_seconds=120,
        min_instances=1,
        max_instances=4,
        cooldown_seconds=600,
        scale_in_threshold=None,
    )


@pytest.fixture
def api():
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    client = APIClient()
    client.force_authenticate(user)
    return client


def url(config):
    return f"/api/autoscaling/configs/{config.pk}/replay"


def test_get_replays_the_saved_policy_over_the_recorded_day(api, config):
    response = api.get(url(config), {"period": "24h", "step": 60})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["service"], body["period"], body["step"]) == (SERVICE, "24h", 60)
    assert body["provisioning_seconds"] == 300 and body["provisioning_measured_events"] == 0  # the default
    recorded = body["recorded"]
    assert len(recorded["points"]) == DAY // 60 + 1
    assert {count for _ts, count in recorded["fleet"]} == {2}
    assert recorded["minutes_above"] == pytest.approx(60)
    current = body["current"]
    # 90 % on 2 VMs: above for 120 s -> +1 (in service 300 s later: 2 x 90 / 3 = 60 %, below 70).
    assert current["scale_outs"] == 1 and current["scale_ins"] == 0
    (event,) = current["events"]
    assert event["direction"] == "out" and event["count"] == 1 and event["source"] == "alert"
    assert event["reason"] == "Scale out by 1 VM(s): 2 instances running, maximum 4."
    assert event["reason_msgid"].startswith("Scale out by %(count)d VM(s)")
    assert current["minutes_above"] == pytest.approx(7)  # 2 min pending + 5 min provisioning
    assert current["vm_hours"] > recorded["vm_hours"]
    assert body["edited"] is None and body["comparison"] == ""


def test_the_reason_is_in_the_readers_language(api, config):
    response = api.get(url(config), {"period": "24h"}, HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code == 200, response.content
    assert response.json()["step"] == 60  # no step asked: this Prometheus' evaluation interval (its default, 1 m)
    (event,) = response.json()["current"]["events"]
    assert "Scale out" not in event["reason"] and "VM" in event["reason"]


def test_post_compares_edited_values_on_the_same_period_and_saves_nothing(api, config):
    before = (ScalingDecision.objects.count(), ScaleOutEvent.objects.count())
    response = api.post(
        url(config),
        {"period": "24h", "policy": {"threshold": 50, "duration_seconds": 60, "cooldown_seconds": 120}},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["current"]["scale_outs"] == 1
    edited = body["edited"]
    assert edited["policy"]["threshold"] == 50
    # 90 % > 50: +1 (60 %), +1 after the cooldown (45 %): two scale-outs.
    assert edited["scale_outs"] == 2
    assert body["comparison"].startswith("Would have scaled out 2 times instead of 1,")
    assert "VM-hours" in body["comparison"]
    config.refresh_from_db()
    assert (config.threshold, config.cooldown_seconds) == (70, 600)
    assert (ScalingDecision.objects.count(), ScaleOutEvent.objects.count()) == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"period": "90d"}, "period"),
        ({"step": 0}, "step"),
        ({"period": "30d", "step": 10}, "step"),  # 259,200 steps
        ({"period": "1h", "step": 1090850337512854.0}, "step"),  # beyond the period (Prometheus cannot parse it)
        ({"policy": {"threshold": 150}}, "policy.threshold"),
        ({"policy": {"min_instances": "many"}}, "policy.min_instances"),
        ({"policy": {"min_instances": 5}}, "policy.max_instances"),  # min above max: the config's own check
        ({"policy": {"metric": "memory"}}, "policy.metric"),
        ({"policy": "fast"}, "policy"),
    ],
)
def test_bad_input_answers_400_with_the_error_shape(api, config, settings, body, field):
    settings.PROMETHEUS_URL = closed_loopback_url()  # refused before Prometheus is asked
    response = api.post(url(config), body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] == "invalid"
    assert field in error["errors"], error


def test_prometheus_down_answers_502_naming_it(api, config, settings):
    settings.PROMETHEUS_URL = closed_loopback_url()
    response = api.get(url(config), {"period": "1h"})
    assert response.status_code == 502, response.content
    error = response.json()
    assert error["system"] == "prometheus"
    assert error["detail"]


def test_a_viewer_may_replay_it_reads_and_saves_nothing(config):
    from django.contrib.auth.models import Group

    from access import roles

    user = get_user_model().objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.VIEWER))
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(url(config), {"period": "1h", "policy": {"threshold": 60}}, format="json")
    assert response.status_code == 200, response.content


# --- the admin -----------------------------------------------------------------------------------------------------
@pytest.fixture
def admin_client_ops(client):
    user = get_user_model().objects.create_superuser("admin-ops", "a@example.com", "pw-admin-123")
    client.force_login(user)
    return client


def change_form_data(client, config):
    """The change form's fields as the page fills them in (what a browser posts)."""
    response = client.get(f"/admin/autoscaling/autoscalingconfig/{config.pk}/change/")
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None:
            continue
        data[name] = [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
    return data


def test_the_change_form_has_the_compare_button_and_it_compares_the_unsaved_values(admin_client_ops, config):
    page = admin_client_ops.get(f"/admin/autoscaling/autoscalingconfig/{config.pk}/change/").content.decode()
    replay_url = f"/admin/autoscaling/autoscalingconfig/{config.pk}/replay/"
    assert 'name="_replay_compare"' in page and f'formaction="{replay_url}"' in page
    data = change_form_data(admin_client_ops, config)
    data.update(threshold="50", duration_seconds="60", cooldown_seconds="120", _replay_compare="1", replay_period="24h")
    response = admin_client_ops.post(replay_url, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Would have scaled out 2 times instead of 1," in html
    assert 'data-chart="fleet-edited"' in html and 'class="series-second"' in html  # replayed and recorded fleets
    assert html.count('class="marker marker-scale_out"') >= 2
    config.refresh_from_db()
    assert config.threshold == 70  # nothing saved


def test_the_replay_page_shows_the_saved_policy_and_an_invalid_edit_says_why(admin_client_ops, config):
    url = f"/admin/autoscaling/autoscalingconfig/{config.pk}/replay/"
    response = admin_client_ops.get(url, {"replay_period": "24h"})
    assert response.status_code == 200
    assert 'data-run="current"' in response.content.decode()
    data = change_form_data(admin_client_ops, config)
    data.update(threshold="150", _replay_compare="1", replay_period="24h")
    html = admin_client_ops.post(url, data).content.decode()
    assert "replay-problem" in html and "100" in html  # "A percentage above 0 and at most 100."
    assert 'id="replay-comparison"' not in html


def test_the_replay_page_says_when_prometheus_is_down(admin_client_ops, config, settings):
    settings.PROMETHEUS_URL = closed_loopback_url()
    html = admin_client_ops.get(f"/admin/autoscaling/autoscalingconfig/{config.pk}/replay/").content.decode()
    assert "Prometheus could not be read" in html
