"""The monitoring JSON endpoints and the dashboard pages, against the lab's real Prometheus and Alertmanager."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from autoscaling import rendering
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
from autoscaling.provisioning import inputs
from dashboard import monitoring
from dashboard.charts import Line, Marker, line_chart_svg
from events.models import ScaleOutEvent
from fleet.models import InstanceChange, ManagedInstance
from fleet.selectors import fleet_size_points
from fleet.services import config_monitored_instances_sync
from integrations.alertmanager import AlertmanagerClient
from templates_app.models import VMTemplate
from tests.browser.support import SHARED_CPU as CPU
from tests.browser.support import SHARED_MEMORY as MEMORY
from tests.browser.support import closed_loopback_url, random_service_name, shared_scraped_service

pytestmark = [pytest.mark.lab, pytest.mark.django_db]


@pytest.fixture
def scraped(lab):
    return shared_scraped_service(lab)


@pytest.fixture
def monitored(lab_settings):
    return lab_settings("metrics", "prometheus", "alertmanager")


def make_config(service, *, targets=(), enabled=True, threshold=75.0, metric="cpu"):
    template = VMTemplate.objects.get_or_create(name=f"tpl-{service}", defaults={"status": "ready"})[0]
    config = AutoscalingConfig.objects.create(
        service_name=service,
        template=template,
        enabled=enabled,
        metric=metric,
        threshold=threshold,
        min_instances=1,
        max_instances=5,
        monitored_instances=list(targets),
    )
    # As the config services do on save: the monitored instances are the fleet's adopted instances.
    config_monitored_instances_sync(config=config)
    return config


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


def test_metrics_returns_cpu_and_memory_from_prometheus_with_threshold_on_the_scaling_metric(monitored, scraped, api):
    make_config(scraped["service"], targets=scraped["targets"], threshold=70)
    response = api.get(f"/api/monitoring/services/{scraped['service']}/metrics", {"range": "1h"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["range"] == "1h"
    assert body["step"] == 15
    assert body["end"] - body["start"] == pytest.approx(3600)
    assert (body["instances"], body["min_instances"], body["max_instances"]) == (2, 1, 5)
    series = {s["metric"]: s for s in body["series"]}
    assert series["cpu"]["threshold"] == 70
    assert series["memory"]["threshold"] is None
    assert 'mode="idle"' in series["cpu"]["expression"]
    assert f'service="{scraped["service"]}"' in series["cpu"]["expression"]
    # The chart queries what the alert rule fires on.
    config = AutoscalingConfig.objects.get(service_name=scraped["service"])
    rule = rendering.alert_expression(inputs.service_spec(config), inputs.render_context())
    assert rule == f"{series['cpu']['expression']} > 70"
    assert series["cpu"]["points"], "no CPU points from Prometheus"
    # Both VMs run at the load set in the stand-in. Memory is a gauge and exact at once; CPU comes from a [30s]
    # rate of the idle counter, which reads high until 30 s of samples exist, never low.
    assert series["memory"]["latest"] == pytest.approx(MEMORY, abs=0.5)
    assert CPU - 5 <= series["cpu"]["latest"] <= 100


def test_metrics_charts_a_custom_expression_on_the_scaling_metric(monitored, scraped, api):
    custom = f'avg by (service) (node_memory_MemTotal_bytes{{service="{scraped["service"]}"}}) * 0 + 42'
    config = make_config(scraped["service"], targets=scraped["targets"], metric="memory", threshold=90)
    config.promql_expression = custom
    config.save()
    body = api.get(f"/api/monitoring/services/{scraped['service']}/metrics").json()
    series = {s["metric"]: s for s in body["series"]}
    assert series["memory"]["expression"] == custom
    assert series["memory"]["threshold"] == 90
    assert series["memory"]["latest"] == 42
    assert series["cpu"]["threshold"] is None
    assert "node_cpu_seconds_total" in series["cpu"]["expression"]


def test_metrics_range_picks_a_step_for_about_240_points(monitored, scraped, api):
    make_config(scraped["service"], targets=scraped["targets"])
    for key, step in (("6h", 90), ("24h", 360), ("7d", 2520)):
        body = api.get(f"/api/monitoring/services/{scraped['service']}/metrics", {"range": key}).json()
        assert body["step"] == step
        assert (body["end"] - body["start"]) / step == pytest.approx(240)


def test_metrics_bad_range_is_400_with_the_allowed_values(api):
    make_config("web")
    response = api.get("/api/monitoring/services/web/metrics", {"range": "5h"})
    assert response.status_code == 400
    body = response.json()
    assert body["allowed"] == ["15m", "30m", "1h", "2h", "3h", "6h", "12h", "24h", "7d"]
    allowed = "15m, 30m, 1h, 2h, 3h, 6h, 12h, 24h, 7d"
    assert "5h" in body["errors"]["range"][0] and allowed in body["errors"]["range"][0]


def test_metrics_unknown_service_is_404(api):
    assert api.get("/api/monitoring/services/nope/metrics").status_code == 404


def test_metrics_with_prometheus_down_is_502_with_the_reason(api, settings):
    settings.PROMETHEUS_URL = closed_loopback_url()
    make_config("web")
    response = api.get("/api/monitoring/services/web/metrics")
    assert response.status_code == 502
    body = response.json()
    assert body["system"] == "prometheus"
    assert settings.PROMETHEUS_URL in body["detail"] and "could not be reached" in body["detail"]


def test_alerts_lists_only_the_portals_autoscale_alerts(monitored, lab, api):
    service = random_service_name("alrt")
    AlertmanagerClient(lab.info("alertmanager")["url"]).post_alerts(
        [
            {
                "labels": {"alertname": "VmasHighCpu", "service": service, "autoscale": "true", "severity": "warning"},
                "annotations": {"summary": f"CPU of {service} above 80%"},
            },
            {"labels": {"alertname": "DiskFull", "service": service}, "annotations": {"summary": "not ours"}},
        ]
    )
    response = api.get("/api/monitoring/alerts", {"service": service})
    assert response.status_code == 200, response.content
    alerts = response.json()
    assert [a["name"] for a in alerts] == ["VmasHighCpu"]
    assert alerts[0]["service"] == service
    assert alerts[0]["summary"] == f"CPU of {service} above 80%"
    assert alerts[0]["labels"]["autoscale"] == "true"
    assert alerts[0]["starts_at"]
    everything = api.get("/api/monitoring/alerts").json()
    assert any(a["service"] == service for a in everything)
    assert all(a["labels"].get("autoscale") == "true" for a in everything)


def test_alerts_bad_service_is_400(api):
    response = api.get("/api/monitoring/alerts", {"service": 'x"}'})
    assert response.status_code == 400
    assert "service" in response.json()["errors"]


def test_alerts_with_alertmanager_down_is_502_with_the_reason(api, settings):
    settings.ALERTMANAGER_URL = closed_loopback_url()
    response = api.get("/api/monitoring/alerts")
    assert response.status_code == 502
    assert response.json()["system"] == "alertmanager"
    assert settings.ALERTMANAGER_URL in response.json()["detail"]


def test_endpoints_need_authentication(db):
    client = APIClient()
    assert client.get("/api/monitoring/alerts").status_code in (401, 403)
    assert client.get("/api/monitoring/services/web/metrics").status_code in (401, 403)


def test_schema_documents_the_monitoring_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    metrics = paths["/api/monitoring/services/{service}/metrics"]["get"]
    assert {"200", "400", "404", "502"} <= set(metrics["responses"])
    (range_param,) = [p for p in metrics["parameters"] if p["name"] == "range"]
    assert sorted(range_param["schema"]["enum"]) == sorted(monitoring.RANGES)
    assert "default" not in range_param["schema"]  # fitted to the service's history, said in the description
    assert "history" in range_param["description"]
    body = response.json()["components"]["schemas"]["ServiceMetrics"]["properties"]
    assert {"fleet_size", "scaling_events"} <= set(body)
    assert "/api/monitoring/alerts" in paths


# --- the admin pages (server-rendered; the browser tests drive the same pages in Chromium) ---------------------


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def test_dashboard_draws_each_enabled_service_with_threshold_events_and_alerts(monitored, scraped, admin_client):
    make_config(scraped["service"], targets=scraped["targets"], threshold=70)
    make_config("idle-svc", enabled=False)
    config = AutoscalingConfig.objects.get(service_name=scraped["service"])
    # An earlier scale-out added a VM to the inventory (an address in use alone counts for nothing); another one
    # is creating a VM now.
    done = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status="succeeded")
    pool = IpPool.objects.create(
        name="p", network="127.20.0.0/24", first_address="127.20.0.10", last_address="127.20.0.20"
    )
    IpAllocation.objects.create(pool=pool, address="127.20.0.10", state="in_use", event=done)
    IpAllocation.objects.create(pool=pool, address="127.20.0.11", state="in_use", event=done)
    ManagedInstance.objects.create(config=config, created_by_event=done, ip_address="127.20.0.10", state="in_service")
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status="running")
    response = admin_client.get(reverse("monitoring-dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-service="{scraped["service"]}"' in html
    assert 'data-service="idle-svc"' not in html  # disabled configs are not on the dashboard
    assert 'class="series" data-points="' in html
    assert 'class="threshold" data-value="70"' in html
    assert "Instances: 3 (min 1, max 5)" in html
    assert 'data-creating="1"' in html
    assert f'data-event="{event.pk}"' in html
    assert "dashboard-banner" not in html


def test_a_query_prometheus_refuses_only_affects_its_own_service(monitored, scraped, admin_client):
    make_config(scraped["service"], targets=scraped["targets"])
    broken = make_config("aaa-broken")  # sorted first, so the good service is queried after it
    broken.promql_expression = "sum(rate(node_cpu_seconds_total[1m]"
    broken.save()
    html = admin_client.get(reverse("monitoring-dashboard")).content.decode()
    assert "dashboard-banner" not in html
    panel = html.split('data-service="aaa-broken"')[1].split("</section>")[0]
    assert "Prometheus refused the query of this service:" in panel and "HTTP 400" in panel
    good = html.split(f'data-service="{scraped["service"]}"')[1].split("</section>")[0]
    assert 'class="series" data-points="' in good


def test_dashboard_event_links_to_the_event_admin_page(admin_client):
    config = make_config("web")
    event = ScaleOutEvent.objects.create(config=config, service_name="web", status="failed")
    html = admin_client.get(reverse("monitoring-fragment")).content.decode()
    try:
        url = reverse("admin:events_scaleoutevent_change", args=[event.pk])
    except Exception:  # the events admin is registered by another part of the project
        pytest.skip("ScaleOutEvent is not registered in the admin")
    assert f'href="{url}"' in html
    assert "status-failed" in html


def test_single_service_page_and_unknown_service(monitored, scraped, admin_client):
    make_config(scraped["service"], targets=scraped["targets"])
    make_config("other")
    response = admin_client.get(reverse("monitoring-service", args=[scraped["service"]]), {"range": "6h"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-service="other"' not in html
    assert 'class="range-link selected" href="?range=6h"' in html
    assert admin_client.get(reverse("monitoring-service", args=["missing"])).status_code == 404


def test_dashboard_with_prometheus_and_alertmanager_down_still_answers_with_banners(admin_client, settings):
    settings.PROMETHEUS_URL = closed_loopback_url()
    settings.ALERTMANAGER_URL = closed_loopback_url()
    make_config("web")
    response = admin_client.get(reverse("monitoring-dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-system="prometheus"' in html and settings.PROMETHEUS_URL in html
    assert 'data-system="alertmanager"' in html and settings.ALERTMANAGER_URL in html
    assert "Charts are unavailable while Prometheus cannot be reached." in html
    # The fleet's size comes from the portal's inventory: still drawn.
    fleet = html.split('data-metric="fleet"')[1].split("</figure>")[0]
    assert 'class="bound" data-value="5"' in fleet


def test_dashboard_with_an_unknown_range_shows_1h_and_says_which_ranges_exist(admin_client, settings):
    settings.PROMETHEUS_URL = closed_loopback_url()
    settings.ALERTMANAGER_URL = closed_loopback_url()
    response = admin_client.get(reverse("monitoring-dashboard"), {"range": "5m"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-system="input"' in html and "15m, 30m, 1h, 2h, 3h, 6h, 12h, 24h, 7d" in html
    assert 'class="range-link selected" href="?range=1h"' in html


def test_dashboard_needs_staff(client, db):
    response = client.get(reverse("monitoring-dashboard"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_index_links_to_the_dashboard(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("monitoring-dashboard")}"' in html


# --- the SVG charts ------------------------------------------------------------------------------------------------


def test_chart_breaks_the_line_at_gaps_and_skips_nan():
    points = [(0, 10.0), (15, 20.0), (30, float("nan")), (45, 30.0), (60, 40.0), (300, 50.0)]
    svg = line_chart_svg(points=points, start=0, end=300, step=15, title="cpu", threshold=80, threshold_label="t 80%")
    path = svg.split('class="series"')[1].split("/>")[0]
    assert 'data-points="5"' in path
    assert path.count("M") == 3  # 0-15, 45-60, then 300 after a gap longer than two steps
    assert 'class="threshold" data-value="80"' in svg
    assert ">100%</text>" in svg  # a percentage axis tops out at 100


def test_chart_axis_grows_past_100_and_escapes_text():
    svg = line_chart_svg(points=[(0, 130.0)], start=0, end=60, step=15, title="<b>&", threshold=None, no_data_label="x")
    assert ">150%</text>" in svg
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg
    assert 'class="threshold"' not in svg


def test_chart_without_points_says_so():
    svg = line_chart_svg(points=[], start=0, end=60, step=15, title="cpu", no_data_label="No data here")
    assert 'class="series"' not in svg
    assert 'class="no-data"' in svg and "No data here" in svg


def test_an_alert_of_the_portals_rules_is_summarized_in_the_readers_language(monitored, lab, api):
    """The pushed annotation is English ("svc: CPU above 70%"); the dashboard says it in the reader's language."""
    service = random_service_name("alko")
    AlertmanagerClient(lab.info("alertmanager")["url"]).post_alerts(
        [
            {
                "labels": {"alertname": "AutoscaleHighCpu", "service": service, "autoscale": "true", "metric": "cpu"},
                "annotations": {"summary": f"{service}: CPU above 70%", "threshold": "70", "value": "85.2"},
            }
        ]
    )
    korean = api.get("/api/monitoring/alerts", {"service": service}, HTTP_ACCEPT_LANGUAGE="ko").json()
    assert [a["summary"] for a in korean] == [f"{service}: CPU 사용률 70 % 초과"]
    english = api.get("/api/monitoring/alerts", {"service": service}, HTTP_ACCEPT_LANGUAGE="en").json()
    assert [a["summary"] for a in english] == [f"{service}: CPU usage above 70 %"]


def test_chart_draws_scale_in_threshold_bounds_and_event_markers():
    svg = line_chart_svg(
        points=[(0, 50.0), (60, 60.0)],
        start=0,
        end=120,
        step=15,
        title="cpu",
        threshold=80,
        threshold_label="out 80%",
        lines=[Line(value=20, label="in 20%", kind="threshold-in")],
        markers=[
            Marker(ts=30, kind="scale_out", label="#7 out", event_id=7),
            Marker(ts=90, kind="scale_in", label="#8 in", event_id=8),
            Marker(ts=100, kind="scale_out", label="#10 rolled back", event_id=10, failed=True),
            Marker(ts=500, kind="scale_out", label="outside", event_id=9),
        ],
    )
    assert 'class="threshold" data-value="80"' in svg and 'class="threshold-in" data-value="20"' in svg
    assert ">in 20%</text>" in svg
    assert 'class="marker marker-scale_out" data-event="7"' in svg and "<title>#7 out</title>" in svg
    assert 'class="marker marker-scale_in" data-event="8"' in svg
    assert 'data-event="9"' not in svg  # outside the range
    assert 'class="marker marker-scale_out marker-failed" data-event="10"' in svg
    assert 'class="marker marker-scale_out" data-event="7"' in svg  # a succeeded one is not marked failed


def test_count_chart_has_whole_number_axis_and_steps():
    svg = line_chart_svg(
        points=[(0, 1.0), (50, 3.0), (100, 3.0)],
        start=0,
        end=100,
        step=15,
        title="fleet",
        unit="",
        steps=True,
        lines=[Line(value=1, label="min 1"), Line(value=4, label="max 4")],
    )
    assert ">5</text>" in svg and ">100%</text>" not in svg  # one above the maximum, no percent
    path = svg.split('class="series"')[1].split("/>")[0]
    # From (0, 1) flat to x=50, then up to 3: a step, not a slope.
    coords = path.split('d="M')[1].split('"')[0].split(" L")
    assert coords[1].split()[1] == coords[0].split()[1] and coords[1].split()[0] == coords[2].split()[0]
    assert 'class="bound" data-value="4"' in svg


def test_fleet_size_points_replay_the_history_into_a_step_series():
    changes = [
        (10, "", "pending"),
        (20, "pending", "in_service"),
        (30, "", "in_service"),  # adopted
        (150, "pending", "provisioning"),  # no change in service
        (160, "", "pending"),
        (170, "pending", "in_service"),
        (180, "in_service", "draining"),
        (500, "", "in_service"),  # after the end
    ]
    assert fleet_size_points(changes=changes, start=100, end=200) == [(100, 2), (170, 3), (180, 2), (200, 2)]
    assert fleet_size_points(changes=[], start=0, end=60) == [(0, 0), (60, 0)]


def test_default_range_fits_the_services_history():
    assert monitoring.range_fit(data_seconds=600) == "15m"
    assert monitoring.range_fit(data_seconds=901) == "30m"
    assert monitoring.range_fit(data_seconds=27 * 60) == "30m"
    assert monitoring.range_fit(data_seconds=4 * 3600) == "6h"
    # Up to a day, the fitted range is at least half full (the first one: whatever history there is).
    for minutes in range(16, 24 * 60 + 1, 7):
        seconds, _step = monitoring.RANGES[monitoring.range_fit(data_seconds=minutes * 60)]
        assert minutes * 60 / seconds >= 0.5, minutes
    assert monitoring.range_fit(data_seconds=30 * 86400) == "24h"  # a week would hide today's events
    assert monitoring.range_fit(data_seconds=None) == monitoring.DEFAULT_RANGE


def test_metrics_give_the_fleet_size_over_time_and_the_scaling_events(monitored, scraped, api):
    config = make_config(scraped["service"], targets=scraped["targets"])  # 2 adopted instances, in service
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status="succeeded")
    scale_in = ScaleOutEvent.objects.create(
        config=config, service_name=config.service_name, status="running", action="scale_in"
    )
    instance = ManagedInstance.objects.create(config=config, created_by_event=event, state="in_service")
    InstanceChange.objects.create(instance=instance, from_state="provisioning", to_state="in_service", reason="x")

    body = api.get(f"/api/monitoring/services/{config.service_name}/metrics").json()
    assert body["range"] == "15m"  # the config was created just now: the shortest range, not a mostly empty hour
    assert [point[1] for point in body["fleet_size"]][-1] == 3
    assert body["fleet_size"][0][0] == pytest.approx(body["start"])
    assert body["fleet_size"][-1][0] == pytest.approx(body["end"])
    assert [(e["id"], e["action"]) for e in body["scaling_events"]] == [
        (event.pk, "scale_out"),
        (scale_in.pk, "scale_in"),
    ]
    cpu = next(s for s in body["series"] if s["metric"] == "cpu")
    assert cpu["scale_in_threshold"] is None  # the config has no scale-in threshold

    assert api.get(f"/api/monitoring/services/{config.service_name}/metrics", {"range": "6h"}).json()["range"] == "6h"


def test_dashboard_draws_the_fleet_chart_markers_and_a_fitted_range(monitored, scraped, admin_client):
    config = make_config(scraped["service"], targets=scraped["targets"], threshold=70)
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status="succeeded")
    html = admin_client.get(reverse("monitoring-dashboard")).content.decode()
    assert 'class="range-link selected" href="?range=15m"' in html
    panel = html.split(f'data-service="{config.service_name}"')[1].split("</section>")[0]
    fleet = panel.split('data-metric="fleet"')[1]
    assert 'class="bound" data-value="1"' in fleet and 'class="bound" data-value="5"' in fleet
    assert f'class="marker marker-scale_out" data-event="{event.pk}"' in fleet
    cpu = panel.split('data-metric="cpu"')[1].split("</figure>")[0]
    assert f'data-event="{event.pk}"' in cpu and 'class="threshold-in"' not in cpu


def test_scale_in_threshold_is_drawn_when_the_config_has_one(monitored, scraped):
    """Scale-in adds `scale_in_threshold` to the config; until then a config without it draws none (above)."""
    from dashboard.views import _chart

    config = make_config(scraped["service"], targets=scraped["targets"], threshold=70)
    config.scale_in_threshold = 30.0
    metrics = monitoring.service_metrics_get(config=config, range_key="15m")
    cpu, memory = (next(s for s in metrics.series if s.metric == metric) for metric in ("cpu", "memory"))
    assert cpu.scale_in_threshold == 30.0 and memory.scale_in_threshold is None
    svg = _chart(cpu, metrics, config.service_name)
    assert 'class="threshold-in" data-value="30"' in svg and "scale-in threshold 30%" in svg
    assert 'class="threshold" data-value="70"' in svg
    assert 'class="threshold-in"' not in _chart(memory, metrics, config.service_name)
