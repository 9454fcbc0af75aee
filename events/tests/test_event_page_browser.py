"""The admin's event page updates itself while the event runs (headless Chromium, no page reload)."""

import time

import pytest
import requests
from django.conf import settings as django_settings

from events.models import ScaleOutEvent
from events.tests.conftest import give_token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOKEN = "browser-test-callback-token-zzzzzzzzzzzzzzzz"


@pytest.fixture
def driver():
    from tests.browser.support import chromium_driver

    driver = chromium_driver()
    yield driver
    driver.quit()


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "the page did not update in time"
        time.sleep(0.2)


def test_event_page_follows_the_pipeline_without_reloading(live_server, driver, admin_user, client, make_event):
    event = make_event(status=ScaleOutEvent.Status.TRIGGERED)
    give_token(event, TOKEN)
    client.force_login(admin_user)
    driver.get(f"{live_server.url}/admin/login/")
    driver.add_cookie({"name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value})
    driver.get(f"{live_server.url}/admin/events/scaleoutevent/{event.pk}/change/")
    assert "Triggered" in driver.find_element("css selector", "[data-ev=status]").text
    driver.execute_script("window.__notReloaded = true;")

    callback = f"{live_server.url}/api/events/{event.pk}/callback"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    step = requests.post(
        f"{callback}/step", json={"step": "vm_clone", "status": "running"}, headers=headers, timeout=10
    )
    assert step.status_code == 200
    wait_for(lambda: "VM clone" in driver.find_element("css selector", "[data-ev=timeline]").text)
    assert "Running" in driver.find_element("css selector", "[data-ev=status]").text

    requests.post(f"{callback}/step", json={"step": "vm_clone", "status": "succeeded"}, headers=headers, timeout=10)
    done = requests.post(f"{callback}/status", json={"status": "succeeded"}, headers=headers, timeout=10)
    assert done.status_code == 200
    wait_for(lambda: "Succeeded" in driver.find_element("css selector", "[data-ev=status]").text)
    assert "Succeeded" in driver.find_element("css selector", "[data-ev=timeline]").text
    assert driver.execute_script("return window.__notReloaded === true;")


def test_event_page_shows_step_messages_and_the_new_vms_as_callbacks_arrive(
    live_server, driver, admin_user, client, make_event
):
    event = make_event(status=ScaleOutEvent.Status.TRIGGERED)
    give_token(event, TOKEN)
    client.force_login(admin_user)
    driver.get(f"{live_server.url}/admin/login/")
    driver.add_cookie({"name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value})
    driver.get(f"{live_server.url}/admin/events/scaleoutevent/{event.pk}/change/")
    assert driver.find_element("css selector", "[data-ev=status]").text == "Triggered"
    assert "No step reported yet." in driver.find_element("css selector", "[data-ev=timeline]").text
    driver.execute_script("window.__notReloaded = true;")

    def callback(kind, body):
        response = requests.post(
            f"{live_server.url}/api/events/{event.pk}/callback/{kind}",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    # The pipeline's curl reports a step: the timeline and the status change on the open page.
    callback("step", {"step": "vm_clone", "status": "running", "message": "cloning web-001"})
    wait_for(lambda: "cloning web-001" in driver.find_element("css selector", "[data-ev=timeline]").text)
    timeline = driver.find_element("css selector", "[data-ev=timeline]").text
    assert "VM clone" in timeline and "Running" in timeline
    wait_for(lambda: driver.find_element("css selector", "[data-ev=status]").text == "Running")

    callback("step", {"step": "vm_clone", "status": "succeeded", "message": "cloned web-001"})
    callback("status", {"status": "succeeded", "vm_names": ["web-001"], "vm_ips": ["127.10.10.21"]})
    wait_for(lambda: driver.find_element("css selector", "[data-ev=status]").text == "Succeeded")
    assert "cloned web-001" in driver.find_element("css selector", "[data-ev=timeline]").text
    assert "Succeeded" in driver.find_element("css selector", "[data-ev=timeline]").text
    assert "web-001 (127.10.10.21)" in driver.find_element("css selector", ".field-vms .readonly").text
    assert driver.execute_script("return window.__notReloaded === true;")
