"""Every admin page and the monitoring dashboard in headless Chromium, in English and in Korean, at 1,400 px.

A browser's language (Accept-Language) picks the language, as for a person. What is checked is what the browser
shows after its scripts ran (the event page's live fields, the dashboard's SVG labels and markers' tooltips): in
Korean, no string of ours is left in English (data, product names and units are allowed: tests/test_i18n.py's
rules), and no list page scrolls sideways at 1,400 px.
"""

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from autoscaling.models import AutoscalingConfig
from events.models import ScaleOutEvent
from fleet.services import config_monitored_instances_sync
from templates_app.models import VMTemplate
from tests.browser.support import chromium_driver, page_texts, shared_scraped_service

# admin_objects: the fixture of tests/test_i18n.py, one object of each model the admin shows.
from tests.test_i18n import MAX_NODE, admin_objects, admin_pages, msgid_pattern, our_msgids  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1400


@pytest.fixture(scope="module")
def browsers():
    drivers = {lang: chromium_driver(lang) for lang in ("en", "ko")}
    for driver in drivers.values():
        driver.set_window_size(WIDTH, 1000)
    yield drivers
    for driver in drivers.values():
        driver.quit()


@pytest.fixture(scope="module")
def patterns():
    return {msgid: msgid_pattern(msgid) for msgid in our_msgids()}


def sign_in(drivers, live_server, client, user):
    client.force_login(user)
    for driver in drivers.values():
        driver.get(f"{live_server.url}/admin/login/")
        driver.delete_all_cookies()
        driver.add_cookie({"name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value})


def shown(driver, url):
    driver.get(url)
    driver.find_element("css selector", "#content")  # the page, not an error
    return "\n".join(text for text in page_texts(driver) if len(text) <= MAX_NODE)


def english_left_in_korean(patterns, english, korean):
    """msgids of ours that the English page shows and the Korean one still shows in English; and all seen."""
    seen, left = set(), []
    for msgid, pattern in patterns.items():
        if pattern.search(english):
            seen.add(msgid)
            match = pattern.search(korean)
            if match:
                left.append(f"{msgid!r} in {match.group(0)!r}")
    return seen, left


def sideways_scroll(driver):
    """How many pixels a list's table is wider than its box (0: it fits)."""
    return driver.execute_script(
        "const r = document.querySelector('#changelist .results');"
        "return r ? Math.max(0, r.scrollWidth - r.clientWidth) : 0;"
    )


def test_every_admin_page_in_korean_has_no_english_of_ours_and_lists_fit_1400px(
    browsers,
    patterns,
    live_server,
    client,
    admin_objects,  # noqa: F811
):
    sign_in(browsers, live_server, client, admin_objects["user"])
    seen_in_english, untranslated, too_wide = set(), {}, {}
    pages = admin_pages(admin_objects)
    pages.append(reverse("admin:events_scaleoutevent_change", args=[admin_objects["event"].pk]))
    for page in pages:
        english = shown(browsers["en"], live_server.url + page)
        korean = shown(browsers["ko"], live_server.url + page)
        assert browsers["ko"].find_element("tag name", "html").get_attribute("lang") == "ko", page
        seen, left = english_left_in_korean(patterns, english, korean)
        seen_in_english |= seen
        if left:
            untranslated[page] = left
        for lang, driver in browsers.items():
            if extra := sideways_scroll(driver):
                too_wide.setdefault(page, []).append(f"{lang}: {extra}px")
    assert len(seen_in_english) > 150, f"only {len(seen_in_english)} of our strings seen in the English pages"
    assert not untranslated, "English in the Korean pages:\n" + "\n".join(
        f"{page}: {', '.join(items)}" for page, items in untranslated.items()
    )
    assert not too_wide, f"lists that scroll sideways at {WIDTH}px: {too_wide}"


def test_config_list_shows_the_rule_the_fleet_size_and_the_sync_state(browsers, live_server, client, admin_objects):  # noqa: F811
    sign_in(browsers, live_server, client, admin_objects["user"])
    url = live_server.url + reverse("admin:autoscaling_autoscalingconfig_changelist")
    expected = {
        "en": ["scale out: CPU usage > 80%", "1 (min 1, max 4)", "Waiting for sync"],
        "ko": ["스케일아웃: CPU 사용률 > 80%", "1 (최소 1, 최대 4)", "동기화 대기 중"],
    }
    for lang, driver in browsers.items():
        driver.get(url)
        row = driver.find_element("css selector", "#result_list tbody tr").text
        for text in expected[lang]:
            assert text in row, (lang, text, row)
        assert sideways_scroll(driver) == 0


def test_decision_reasons_read_as_sentences(browsers, live_server, client, admin_objects):  # noqa: F811
    from events.models import ScalingDecision

    ScalingDecision.objects.update(reason="Scale out by 1 VM(s): 2 instances running, maximum 4.")
    sign_in(browsers, live_server, client, admin_objects["user"])
    driver = browsers["en"]
    driver.get(live_server.url + reverse("admin:events_scalingdecision_changelist"))
    cell = driver.find_element("css selector", "#result_list td.field-reason_column")
    # One or two lines, not a word a line: at least 18em wide (the font is 13 px).
    assert cell.size["width"] >= 230, cell.size
    assert cell.size["height"] <= 3 * 20, cell.size


def test_event_page_rounds_the_alert_value_and_lists_the_vms(browsers, live_server, client, admin_objects):  # noqa: F811
    event = admin_objects["event"]
    ScaleOutEvent.objects.filter(pk=event.pk).update(
        alert_value="85.00196249999999",
        vm_names=["svc-i18n-001", "svc-i18n-002"],
        vm_ips=["127.78.0.10", "127.78.0.11"],
    )
    sign_in(browsers, live_server, client, admin_objects["user"])
    driver = browsers["en"]
    driver.get(live_server.url + reverse("admin:events_scaleoutevent_change", args=[event.pk]))
    assert driver.find_element("css selector", ".field-value .readonly").text == "85"
    items = driver.find_elements("css selector", ".field-vms .readonly ul.plain-list li")
    assert [item.text for item in items] == ["svc-i18n-001 (127.78.0.10)", "svc-i18n-002 (127.78.0.11)"]
    assert "[" not in driver.find_element("css selector", ".field-vms .readonly").text


@pytest.mark.lab
def test_dashboard_in_english_and_korean_with_thresholds_markers_and_fleet_size(
    browsers, patterns, live_server, client, lab, lab_settings, admin_user
):
    lab_settings("metrics", "prometheus", "alertmanager")
    scraped = shared_scraped_service(lab)
    template = VMTemplate.objects.create(name=f"tpl-{scraped['service']}", status="ready")
    config = AutoscalingConfig.objects.create(
        service_name=scraped["service"],
        template=template,
        enabled=True,
        threshold=70,
        min_instances=1,
        max_instances=4,
        monitored_instances=scraped["targets"],
    )
    config_monitored_instances_sync(config=config)
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status="succeeded")
    sign_in(browsers, live_server, client, admin_user)
    url = live_server.url + reverse("monitoring-service", args=[config.service_name])

    english = shown(browsers["en"], url)
    korean = shown(browsers["ko"], url)
    for lang, driver in browsers.items():
        panel = driver.find_element("css selector", f'section[data-service="{config.service_name}"]')
        cpu = panel.find_element("css selector", 'figure[data-metric="cpu"] svg')
        assert cpu.find_element("css selector", "line.threshold").get_attribute("data-value") == "70"
        assert cpu.find_elements("css selector", f'g.marker-scale_out[data-event="{event.pk}"]'), lang
        fleet = panel.find_element("css selector", 'figure[data-metric="fleet"] svg')
        assert int(fleet.find_element("css selector", "path.series").get_attribute("data-points")) >= 2
        assert {b.get_attribute("data-value") for b in fleet.find_elements("css selector", "line.bound")} == {"1", "4"}
        # The range fits the service's history: created now, so 15 minutes, not a mostly empty hour.
        assert driver.find_element("css selector", ".range-link.selected").text == "15m"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= WIDTH
    assert "scale-out threshold 70%" in english and "Instances in service" in english
    assert "스케일아웃 임계값 70%" in korean and "서비스 중 인스턴스" in korean
    assert f"#{event.pk} 스케일아웃 +1 VM" in korean  # the marker's tooltip
    _seen, left = english_left_in_korean(patterns, english, korean)
    # The signed-in user's name is data (it is also a word of ours: the audit trail's "admin" door).
    left = [item for item in left if item != "'admin' in 'admin'"]
    assert not left, f"English in the Korean dashboard: {left}"
