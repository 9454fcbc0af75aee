"""The monitoring dashboard in headless Chromium, served by pytest-django's live server, fed by the lab."""

import os
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from autoscaling.models import AutoscalingConfig
from events.models import ScaleOutEvent
from fleet.services import config_monitored_instances_sync
from templates_app.models import VMTemplate
from tests.browser.support import SHARED_MEMORY as MEMORY
from tests.browser.support import (
    chromium_driver,
    closed_loopback_url,
    shared_scraped_service,
)

pytestmark = [pytest.mark.browser, pytest.mark.lab]

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
PASSWORD = "pw-browser-123"


@pytest.fixture
def scraped(lab):
    return shared_scraped_service(lab)


@pytest.fixture(scope="module")
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


@pytest.fixture
def monitored(lab_settings):
    return lab_settings("metrics", "prometheus", "alertmanager")


@pytest.fixture
def signed_in(browser, live_server, transactional_db):
    """The browser signed in to the admin as a superuser, through the login form."""
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element("name", "username").send_keys("ops")
    browser.find_element("name", "password").send_keys(PASSWORD)
    browser.find_element("css selector", "input[type=submit]").click()
    wait_for(browser, lambda: browser.find_elements("id", "monitoring-dashboard-link"), "admin index after login")
    yield browser
    # Stop the page's polling before the live server's database is flushed for the next test.
    browser.get("about:blank")


def wait_for(browser, condition, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; page: {browser.current_url}")


def make_config(service, targets, threshold=70.0):
    template = VMTemplate.objects.create(name=f"tpl-{service}", status="ready")
    config = AutoscalingConfig.objects.create(
        service_name=service,
        template=template,
        enabled=True,
        metric="cpu",
        threshold=threshold,
        min_instances=1,
        max_instances=4,
        monitored_instances=list(targets),
    )
    # As the config services do on save: the monitored instances are the fleet's adopted instances.
    config_monitored_instances_sync(config=config)
    return config


def test_dashboard_shows_charts_from_prometheus_and_refreshes_in_place(monitored, scraped, signed_in, live_server):
    browser = signed_in
    service = scraped["service"]
    config = make_config(service, scraped["targets"])

    browser.find_element("id", "monitoring-dashboard-link").click()
    panel = wait_for(
        browser, lambda: browser.find_elements("css selector", f'section[data-service="{service}"]'), "panel"
    )[0]
    cpu_chart = panel.find_element("css selector", 'figure[data-metric="cpu"] svg')
    path = cpu_chart.find_element("css selector", "path.series")
    assert int(path.get_attribute("data-points")) >= 1
    assert path.get_attribute("d").startswith("M")
    assert cpu_chart.find_element("css selector", "line.threshold").get_attribute("data-value") == "70"
    assert "scale-out threshold 70%" in cpu_chart.find_element("css selector", "text.threshold-label").text
    memory_caption = panel.find_element("css selector", 'figure[data-metric="memory"] figcaption').text
    assert f"{MEMORY:.1f}%" in memory_caption
    assert panel.find_elements("css selector", 'figure[data-metric="memory"] line.threshold') == []
    assert "Instances: 2 (min 1, max 4)" in panel.text
    assert browser.find_elements("css selector", ".dashboard-banner") == []

    # The page refreshes itself: a new event shows up without a reload (the marker survives).
    browser.get(f"{live_server.url}/admin/monitoring/?refresh=2")
    browser.execute_script("window.__notReloaded = true;")
    event = ScaleOutEvent.objects.create(config=config, service_name=service, status="running")
    row = wait_for(
        browser, lambda: browser.find_elements("css selector", f'tr.event-row[data-event="{event.pk}"]'), "event row"
    )[0]
    assert "Running" in row.text
    assert browser.execute_script("return window.__notReloaded === true;")
    link = row.find_element("css selector", "a").get_attribute("href")
    assert link.endswith(f"/admin/events/scaleoutevent/{event.pk}/change/")

    # When the session ends, a refresh gets the login page: the page keeps its data and marks the refresh failed.
    Session.objects.all().delete()
    state = browser.find_element("id", "dashboard-refresh-state")
    wait_for(browser, lambda: "refresh-failed" in state.get_attribute("class"), "the failed refresh to show")
    assert browser.find_elements("css selector", f'section[data-service="{service}"] svg.chart')
    assert not browser.find_elements("css selector", "#dashboard-body #login-form")

    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))


def test_dashboard_with_prometheus_unreachable_answers_200_with_a_banner(monitored, scraped, signed_in, live_server):
    browser = signed_in
    make_config(scraped["service"], scraped["targets"])
    unreachable = closed_loopback_url()
    monitored.PROMETHEUS_URL = unreachable

    session = {"sessionid": browser.get_cookie("sessionid")["value"]}
    response = requests.get(f"{live_server.url}/admin/monitoring/", cookies=session, timeout=30)
    assert response.status_code == 200

    browser.get(f"{live_server.url}/admin/monitoring/")
    banner = browser.find_element("css selector", '.dashboard-banner[data-system="prometheus"]')
    assert "Prometheus cannot be reached" in banner.text
    assert unreachable in banner.text
    assert browser.find_elements("css selector", 'figure[data-metric="cpu"], figure[data-metric="memory"]') == []
    # The fleet's size comes from the portal's own inventory: still drawn.
    assert browser.find_elements("css selector", 'figure[data-metric="fleet"] svg.chart')
    # Alertmanager still answers, so its part of the page is there without a banner.
    assert browser.find_elements("css selector", '.dashboard-banner[data-system="alertmanager"]') == []
    assert browser.find_element("id", "dashboard-alerts")
