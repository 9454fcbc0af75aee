"""The replay's comparison in the admin, in headless Chromium (issue 18's must-show): on a config's change form an
operator edits the threshold, the duration and the cooldown without saving, picks a period and presses "Compare
with replay"; the replay page says what the edited values would have done against the saved ones over the recorded
day (a real Prometheus backfilled with promtool), with the charts. Nothing is saved.

With REPLAY_SCREENSHOTS=1 the pages are also saved as the user guide's docs/img/<lang>/config-replay.png.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from autoscaling.tests.test_replay_api import config, prometheus_url  # noqa: F401 (fixtures)
from tests.browser.support import chromium_driver

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
EXPECTED = {
    "en": "Would have scaled out 2 times instead of 1,",
    "ko": "스케일아웃 2회",
}


@pytest.fixture
def signed_in(live_server, client):
    user = get_user_model().objects.create_superuser("replay-ops", "r@example.com", "pw-replay-123")
    client.force_login(user)

    def open_browser(lang):
        driver = chromium_driver(lang)
        driver.set_window_size(1400, 1000)
        driver.get(f"{live_server.url}/admin/login/")
        driver.delete_all_cookies()
        driver.add_cookie({"name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value})
        return driver

    return open_browser


def set_value(driver, element_id, value):
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_compare_with_replay_on_the_change_form(signed_in, live_server, config, lang):  # noqa: F811
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = signed_in(lang)
    try:
        driver.get(f"{live_server.url}/admin/autoscaling/autoscalingconfig/{config.pk}/change/")
        set_value(driver, "id_threshold", "50")
        set_value(driver, "id_duration_seconds", "60")
        set_value(driver, "id_cooldown_seconds", "120")
        Select(driver.find_element("id", "id_replay_period")).select_by_value("24h")
        button = driver.find_element("id", "replay-compare")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        if os.environ.get("REPLAY_SCREENSHOTS"):
            row = driver.find_element("css selector", ".replay-compare")
            row.screenshot(str(DOCS_IMG / lang / "config-replay-button.png"))
        button.click()
        comparison = WebDriverWait(driver, 60).until(lambda d: d.find_elements("id", "replay-comparison"))[0]
        assert EXPECTED[lang] in comparison.text, comparison.text
        # The summary: the saved policy, the edited one and what was recorded; the charts drawn.
        rows = {
            row.get_attribute("data-run"): row.text
            for row in driver.find_elements("css selector", "#replay-summary tbody tr")
        }
        assert set(rows) == {"current", "edited", "recorded"}
        assert driver.find_elements("css selector", '[data-chart="metric"] svg .series')
        assert driver.find_elements("css selector", '[data-chart="fleet-edited"] svg .series-second')
        markers = driver.find_elements("css selector", '[data-chart="fleet-edited"] svg .marker-scale_out')
        assert len(markers) == 2
        if os.environ.get("REPLAY_SCREENSHOTS"):
            for _ in range(3):  # the window's outer size holds the viewport: grow until the page fits
                height = driver.execute_script("return document.documentElement.scrollHeight")
                inner = driver.execute_script("return window.innerHeight")
                if inner >= height:
                    break
                driver.set_window_size(1400, min(driver.get_window_size()["height"] + height - inner + 20, 3200))
            driver.save_screenshot(str(DOCS_IMG / lang / "config-replay.png"))
    finally:
        driver.quit()
    config.refresh_from_db()
    assert (config.threshold, config.duration_seconds, config.cooldown_seconds) == (70, 120, 600)
