"""The Korean translation: complete, compiled, current with the code, and what the admin shows in Korean.

The catalogs: locale/ko/LC_MESSAGES/django.po (our strings, made by `makemessages`) and
locale/thirdparty/ko/LC_MESSAGES/django.po (libraries the portal shows: DRF's Korean, which ships as ko_KR only,
django-q2 and django-filter). See docs/user-guide.md "Language".
"""

import ast
import gettext
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent
OURS = ROOT / "locale" / "ko" / "LC_MESSAGES" / "django.po"
THIRD_PARTY = ROOT / "locale" / "thirdparty" / "ko" / "LC_MESSAGES" / "django.po"
CATALOGS = [OURS, THIRD_PARTY]
# What `makemessages` scans: the apps and the pipeline's step messages (pipeline/ has no Django: it marks its ids
# with contract.gettext_noop and the portal translates them), not the lab, the tests or the tooling.
MAKEMESSAGES_SOURCES = [
    "vmautoscale",
    "common",
    "access",
    "templates_app",
    "autoscaling",
    "fleet",
    "events",
    "dashboard",
    "demo",
    "pipeline",
]

needs_gettext = pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext (msgfmt) is not installed")


# --- a small .po reader ---------------------------------------------------------------------------------------
def po_entries(path):
    """[{msgid, msgid_plural, msgstr: [..], flags: set, obsolete}] of a .po file, the header left out."""
    entries, entry, key = [], None, None

    def flush():
        if entry is not None and not (entry["msgid"] == "" and entry["msgctxt"] is None):
            entries.append(entry)

    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            flush()
            entry, key = None, None
            continue
        if entry is None:
            entry = {"msgctxt": None, "msgid": "", "msgid_plural": None, "msgstr": {}, "flags": set()}
            entry["obsolete"] = False
        if line.startswith("#~"):
            entry["obsolete"] = True
        elif line.startswith("#,"):
            entry["flags"].update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif match := re.match(r'^(msgctxt|msgid_plural|msgid|msgstr)(?:\[(\d+)\])?\s+(".*")$', line):
            word, index, text = match.group(1), match.group(2), ast.literal_eval(match.group(3))
            if word == "msgstr":
                key = ("msgstr", int(index or 0))
                entry["msgstr"][key[1]] = text
            else:
                key = (word,)
                entry[word] = text
        elif line.startswith('"'):
            text = ast.literal_eval(line)
            if key[0] == "msgstr":
                entry["msgstr"][key[1]] += text
            else:
                entry[key[0]] += text
    return [e for e in entries if not e["obsolete"]]


# --- (a) complete ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("catalog", CATALOGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_catalog_has_no_untranslated_or_fuzzy_entry(catalog):
    entries = po_entries(catalog)
    assert len(entries) > 100, "the catalog lost its entries"
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e["flags"]]
    untranslated = [e["msgid"] for e in entries if not e["msgstr"] or not all(e["msgstr"].values())]
    assert not fuzzy, f"fuzzy entries in {catalog.name} (check and clear the flag): {fuzzy}"
    assert not untranslated, f"untranslated entries in {catalog.name}: {untranslated}"
    header = catalog.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert not re.search(r"^#,.*fuzzy", header, re.MULTILINE), "a fuzzy header makes msgfmt drop the charset"
    assert '"Language: ko\\n"' in header


@needs_gettext
def test_catalog_is_current_with_the_code(tmp_path):
    """Every translatable string of the apps is in our .po (run makemessages -l ko after adding strings)."""
    for name in MAKEMESSAGES_SOURCES:
        (tmp_path / name).symlink_to(ROOT / name)
    locale = tmp_path / "locale" / "ko" / "LC_MESSAGES"
    locale.mkdir(parents=True)
    shutil.copy(OURS, locale / "django.po")
    script = (
        "import os, sys, django; sys.path.insert(0, os.environ['ROOT']); django.setup()\n"
        "from django.conf import settings; from django.core.management import call_command\n"
        "settings.LOCALE_PATHS = [os.path.abspath('locale')]\n"
        "call_command('makemessages', locale=['ko'], symlinks=True, verbosity=0, ignore_patterns=['*/tests/*'])\n"
    )
    env = {"ROOT": str(ROOT), "DJANGO_SETTINGS_MODULE": "vmautoscale.settings", "PATH": "/usr/bin:/bin"}
    env["LAB_ENV_FILE"] = ""  # hermetic, as the test session itself (lab/pytest_plugin.py)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    fresh = {(e["msgctxt"], e["msgid"]) for e in po_entries(locale / "django.po")}
    committed = {(e["msgctxt"], e["msgid"]) for e in po_entries(OURS)}
    missing = sorted(msgid for _ctx, msgid in fresh - committed)
    stale = sorted(msgid for _ctx, msgid in committed - fresh)
    assert not missing, f"strings in the code but not in {OURS.relative_to(ROOT)} (run makemessages): {missing}"
    assert not stale, f"strings in {OURS.relative_to(ROOT)} that the code no longer has: {stale}"


# --- (b) compiled ---------------------------------------------------------------------------------------------
@needs_gettext
@pytest.mark.parametrize("catalog", CATALOGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_mo_is_compiled_from_the_current_po(catalog, tmp_path):
    compiled = tmp_path / "django.mo"
    result = subprocess.run(
        ["msgfmt", "--check-format", "-o", str(compiled), str(catalog)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"msgfmt refuses {catalog.name}: {result.stderr}"
    shipped = catalog.with_suffix(".mo")
    assert shipped.is_file(), f"{shipped} is missing: run manage.py compilemessages -l ko"
    with compiled.open("rb") as fresh_file, shipped.open("rb") as shipped_file:
        fresh = gettext.GNUTranslations(fresh_file)._catalog
        current = gettext.GNUTranslations(shipped_file)._catalog
    assert current == fresh, f"{shipped.relative_to(ROOT)} is older than its .po: run compilemessages -l ko"


# --- (c) the admin in Korean ----------------------------------------------------------------------------------
class VisibleText(HTMLParser):
    """Text nodes a person sees (and the labels of buttons and controls), scripts and styles left out."""

    ATTRIBUTES = {"title", "placeholder", "aria-label", "alt"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.nodes = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        attrs = dict(attrs)
        for name in self.ATTRIBUTES & attrs.keys():
            self._add(attrs[name])
        if tag == "input" and attrs.get("type") in ("submit", "button"):
            self._add(attrs.get("value"))

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self._add(data)

    def _add(self, text):
        text = " ".join((text or "").split())
        if text:
            self.nodes.append(text)


def visible_nodes(html):
    parser = VisibleText()
    parser.feed(html)
    return parser.nodes


PLACEHOLDER = re.compile(r"%\([a-z_]+\)[-+ #0-9.]*[sdrf]|%[sd]|\{[a-z_]*\}")


def msgid_pattern(msgid):
    """A regex for the msgid as rendered, over the page's nodes joined by newlines.

    Placeholders match anything within a node; a short msgid without placeholders ("status", "Jenkins job") must
    be a whole node (a label, column header or option), so English data in a Korean page (a VM name, a log line)
    is not taken for an untranslated label.
    """
    parts = PLACEHOLDER.split(msgid.replace("%%", "%"))
    if len(parts) == 1 and len(msgid.split()) < 3:
        return re.compile(r"^\s*" + re.escape(msgid) + r"\s*[:?]?\s*$", re.IGNORECASE | re.MULTILINE)
    while parts and not parts[0].strip():
        parts.pop(0)
    while parts and not parts[-1].strip():
        parts.pop()
    body = r"[^\n]+?".join(re.escape(part) for part in parts)
    lead = r"\b" if re.match(r"\w", parts[0]) else ""
    tail = r"\b" if re.search(r"\w$", parts[-1]) else ""
    return re.compile(lead + body + tail, re.IGNORECASE)


MAX_NODE = 400  # longer text is data (a build log, a payload, a diff), not a label of ours


def page_text(html):
    return "\n".join(node for node in visible_nodes(html) if len(node) <= MAX_NODE)


def our_msgids():
    """msgids of ours whose Korean differs from the English (a product name such as "Jenkins" stays as it is)."""
    result = []
    for entry in po_entries(OURS):
        translations = set(entry["msgstr"].values())
        for msgid in filter(None, [entry["msgid"], entry["msgid_plural"]]):
            if msgid not in translations and msgid not in LANGUAGE_NAMES:
                result.append(msgid)
    return result


# The language switcher names each language in its own language ("English" on a Korean page too), by design.
LANGUAGE_NAMES = {"English", "Korean"}


@pytest.fixture
def admin_objects(db, settings):
    """One object of each model the admin shows, and every external system pointed at a closed loopback port."""
    from django.contrib.auth import get_user_model

    from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProvisioningRun
    from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
    from lab.core import free_port
    from templates_app.models import VMTemplate

    closed = f"127.0.0.1:{free_port()}"
    settings.VCENTER_URL = f"https://{closed}/sdk"
    settings.PROMETHEUS_URL = f"http://{closed}"
    settings.ALERTMANAGER_URL = f"http://{closed}"
    settings.JENKINS_URL = f"http://{closed}/"
    settings.F5_URL = f"http://{closed}"

    user = get_user_model().objects.create_superuser("i18n-admin", password="i18n-password-1")
    template = VMTemplate.objects.create(
        name="tpl-i18n", status=VMTemplate.Status.READY, source_vm_name="vm-i18n", guest_os="ubuntu64Guest"
    )
    pool = IpPool.objects.create(
        name="pool-i18n",
        network="127.78.0.0/24",
        first_address="127.78.0.10",
        last_address="127.78.0.29",
        gateway="127.78.0.1",
        dns_servers=["127.0.0.53"],
        ping_check=False,
    )
    config = AutoscalingConfig.objects.create(
        service_name="svc-i18n",
        template=template,
        ip_pool=pool,
        enabled=True,
        monitored_instances=["127.78.0.5:9100"],
        f5_pool="pool_i18n",
    )
    notification = AlertNotification.objects.create(
        service_name=config.service_name, config=config, status="firing", group_key="{}:{}", payload={}
    )
    event = ScaleOutEvent.objects.create(
        config=config,
        service_name=config.service_name,
        status=ScaleOutEvent.Status.ROLLED_BACK,
        notification=notification,
        jenkins_job="vmautoscale-svc-i18n",
        build_number=7,
        error="F5 unreachable",
        failed_step=EventAction.Step.F5_ADD,
    )
    for step in list(EventAction.Step)[:3]:
        EventAction.objects.create(event=event, step=step, status=EventAction.Status.SUCCEEDED, message="ok")
    ScalingDecision.objects.create(
        notification=notification,
        service_name=config.service_name,
        config=config,
        outcome=ScalingDecision.Outcome.SCALE_OUT,
        reason="(recorded reason)",
        event=event,
    )
    ScalingDecision.objects.create(
        notification=notification,
        service_name=config.service_name,
        config=config,
        outcome=ScalingDecision.Outcome.COOLDOWN,
        reason="(another recorded reason)",
    )
    allocation = IpAllocation.objects.create(pool=pool, address="127.78.0.10", event=event, vm_name="svc-i18n-001")
    # The fleet: the adopted monitored instance (first, so its change page is the one rendered) and a created one.
    from fleet import services as fleet_services
    from fleet.models import InstanceChange

    fleet_services.config_monitored_instances_sync(config=config)
    instance, _created = fleet_services.instance_record(event=event, allocation=allocation)
    fleet_services.event_instances_fail(event_id=event.pk, reason="(recorded reason)")
    InstanceChange.objects.update(reason="(recorded reason)")  # recorded text, as the decisions' reasons above
    ProvisioningRun.objects.create(reason="i18n test", status=ProvisioningRun.Status.UNCHANGED)
    return {"user": user, "event": event, "config": config}


def admin_pages(objects):
    """Every admin page an operator sees: index, each model's list, add and change forms, the dashboard."""
    pages = ["/admin/"]
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        if meta.app_label in ("auth", "knox", "axes", "django_q"):
            continue  # Django's and the libraries' own pages, translated by them (and locale/thirdparty)
        pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        if model_admin.has_add_permission(_request(objects["user"])):
            pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))
    pages.append(reverse("admin:templates_app_vmtemplate_create"))
    pages.append(reverse("monitoring-dashboard"))
    pages.append(reverse("monitoring-service", args=[objects["config"].service_name]))
    return pages


def _request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def test_admin_in_korean_shows_no_untranslated_string_of_ours(client, admin_objects):
    client.force_login(admin_objects["user"])
    patterns = {msgid: msgid_pattern(msgid) for msgid in our_msgids()}
    seen_in_english = set()
    untranslated = {}
    for page in admin_pages(admin_objects):
        english = client.get(page, HTTP_ACCEPT_LANGUAGE="en", follow=True)
        korean = client.get(page, HTTP_ACCEPT_LANGUAGE="ko", follow=True)
        assert english.status_code == 200, page
        assert korean.status_code == 200, page
        assert '<html lang="ko"' in korean.content.decode(), f"{page} did not switch to Korean"
        english_text = page_text(english.content.decode())
        korean_text = page_text(korean.content.decode())
        for msgid, pattern in patterns.items():
            if pattern.search(english_text):
                seen_in_english.add(msgid)
                left = pattern.search(korean_text)
                if left:
                    untranslated.setdefault(page, []).append(f"{msgid!r} in {left.group(0)!r}")
    # The check means something only if the English pages show many of our strings.
    assert len(seen_in_english) > 150, f"only {len(seen_in_english)} of our strings found in the English admin"
    assert not untranslated, "untranslated in the Korean admin:\n" + "\n".join(
        f"{page}: {', '.join(items)}" for page, items in untranslated.items()
    )


# --- the language follows the browser or a setting -----------------------------------------------------------
def test_language_follows_the_browser_the_setting_and_the_switcher(client, admin_objects, settings):
    client.force_login(admin_objects["user"])
    url = reverse("admin:events_scaleoutevent_changelist")
    assert "스케일아웃 이벤트" in client.get(url, HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9,en;q=0.5").content.decode()
    assert "Scale-out events" in client.get(url, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()

    settings.LANGUAGE_CODE = "ko"  # no Accept-Language: the setting (LANGUAGE_CODE env) decides
    assert "스케일아웃 이벤트" in client.get(url).content.decode()
    settings.LANGUAGE_CODE = "en"

    page = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'id="language-switcher"' in page and "한국어" in page
    response = client.post(reverse("set_language"), {"language": "ko", "next": url}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 302
    assert "스케일아웃 이벤트" in client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_api_errors_in_korean(client, admin_objects):
    """DRF's own messages (its ko_KR catalog, loaded through locale/thirdparty) and ours, for Accept-Language ko."""
    client.force_login(admin_objects["user"])
    response = client.post(
        "/api/autoscaling/ip-pools", {"name": "p"}, content_type="application/json", HTTP_ACCEPT_LANGUAGE="ko"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["network"] == ["이 필드는 필수 항목입니다."]
    response = client.post(
        "/api/autoscaling/ip-pools",
        {"name": "p", "network": "127.79.0.1/24", "first_address": "127.79.0.10", "last_address": "127.79.0.20"},
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="ko",
    )
    assert response.status_code == 400
    assert "호스트 비트" in str(response.json()), response.json()
    client.logout()
    response = client.get("/api/autoscaling/configs", HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code in (401, 403)
    assert response.json()["detail"] == "자격 인증 데이터가 제공되지 않았습니다."


def test_recorded_reasons_are_written_in_the_portal_language(client, settings, db):
    """Alertmanager sends no Accept-Language: decisions are recorded in LANGUAGE_CODE (here Korean)."""
    from events.tests.conftest import firing_payload

    settings.WEBHOOK_TOKEN = "i18n-webhook-token"
    settings.LANGUAGE_CODE = "ko"
    response = client.post(
        "/api/webhook/autoscale/svc-none",
        data=json.dumps(firing_payload("svc-none")),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer i18n-webhook-token",
    )
    assert response.status_code == 202, response.content
    from django.utils import translation

    from events import intake
    from events.models import ScalingDecision

    with translation.override("en"):  # whatever the worker's language, the decider records in LANGUAGE_CODE
        intake.notifications_decide()
    assert ScalingDecision.objects.get().reason == "“svc-none”라는 이름의 오토스케일링 설정이 없습니다."


def test_settings_offer_english_and_korean():
    assert dict(settings.LANGUAGES).keys() == {"en", "ko"}
    assert "django.middleware.locale.LocaleMiddleware" in settings.MIDDLEWARE
    assert settings.LOCALE_PATHS[0] == ROOT / "locale"


def test_user_guides_have_the_same_structure_and_their_screenshots_exist():
    """docs/사용자-가이드.md is the Korean docs/user-guide.md: same sections, same screenshots (in Korean)."""
    guides = {lang: ROOT / "docs" / name for lang, name in (("en", "user-guide.md"), ("ko", "사용자-가이드.md"))}
    headings, images = {}, {}
    for lang, path in guides.items():
        text = path.read_text(encoding="utf-8")
        headings[lang] = [len(m.group(1)) for m in re.finditer(r"^(#+) ", text, re.MULTILINE)]
        images[lang] = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        for image in images[lang]:
            assert (path.parent / image).is_file(), f"{path.name} shows {image}, which does not exist"
    assert headings["en"] == headings["ko"], "the two guides do not have the same sections"
    assert len(images["en"]) >= 8
    korean_images = [image.replace("img/en/", "img/ko/") for image in images["en"]]
    # The Korean guide shows the Korean screenshots (and the English one ends with the Korean admin).
    assert images["ko"] == korean_images


SWEEP_ENDED = "Jenkins build #%(n)d ended %(result)s without reporting the event's final status."


@pytest.fixture
def language_reset():
    """Django keeps the language of the last request active in this thread: the tests after see the default."""
    yield
    from django.utils import translation

    translation.deactivate()


def test_stored_reasons_and_messages_are_shown_in_the_readers_language(client, db, language_reset):
    """A decision, a pipeline step and an instance change recorded while the language was English: a Korean reader
    sees them in Korean (API and admin), an English one in English; a text from outside (Jenkins) stays as it came."""
    from django.contrib.auth import get_user_model
    from django.utils import translation

    from autoscaling.models import AutoscalingConfig
    from common.messages import Message
    from events import callbacks, intake, status
    from events.models import EventAction, ScaleOutEvent
    from fleet import services as fleet_services
    from fleet.models import ManagedInstance
    from pipeline import contract
    from templates_app.models import VMTemplate

    user = get_user_model().objects.create_superuser("reader", "reader@example.com", "pw-reader")
    template = VMTemplate.objects.create(name="tpl-reader", status=VMTemplate.Status.READY)
    config = AutoscalingConfig.objects.create(service_name="svc-reader", template=template, enabled=False)
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name)
    instance = ManagedInstance.objects.create(config=config, ip_address="127.79.0.5")
    with translation.override("en"):
        decision = intake.scale_out_request(service_name="svc-reader", user=user)
        # The pipeline's report, as pipeline/portal.py sends it: its English text, its message id and parameters.
        reported = contract.message_fields(contract.reserved_message(["127.79.0.10"], []))
        callbacks.event_step_report(event_id=event.pk, step="ip_allocate", status="running")
        callbacks.event_step_report(event_id=event.pk, step="ip_allocate", status="succeeded", **reported)
        callbacks.event_step_report(
            event_id=event.pk, step="vm_clone", status="failed", message="Jenkins: connection refused"
        )
        fleet_services.instance_protect(instance_id=instance.pk, protected=True, user=user)
        # The sweep's verdict on a build that ended without a final report (events/sweep.py).
        status.event_fail_active(event_id=event.pk, message=Message(SWEEP_ENDED, {"n": 3, "result": "SUCCESS"}))
    decision.refresh_from_db()
    step = EventAction.objects.get(event=event, step="ip_allocate")
    change = instance.history.order_by("pk").last()
    # Stored as written: the English text, and the id with its parameters.
    assert decision.reason == "Autoscaling of “svc-reader” is disabled." and decision.reason_msgid
    assert step.message == "Reserved 127.79.0.10." and step.message_params == {"addresses": "127.79.0.10"}
    assert change.reason == "Protected from scale-in." and change.reason_msgid == "Protected from scale-in."

    korean = {
        "decision": "“svc-reader”의 오토스케일링이 비활성화되어 있습니다.",
        "step": "127.79.0.10 을(를) 예약했습니다.",
        "change": "스케일인에서 보호했습니다.",
    }
    client.force_login(user)
    decisions = client.get("/api/autoscaling/decisions?service=svc-reader", HTTP_ACCEPT_LANGUAGE="ko").json()
    assert [d["reason"] for d in decisions["results"]] == [korean["decision"]]
    steps = {
        a["step"]: a["message"]
        for a in client.get(f"/api/autoscaling/events/{event.pk}", HTTP_ACCEPT_LANGUAGE="ko").json()["actions"]
    }
    assert steps == {"ip_allocate": korean["step"], "vm_clone": "Jenkins: connection refused"}
    with translation.override("ko"):
        korean["error"] = translation.gettext(SWEEP_ENDED) % {"n": 3, "result": "SUCCESS"}
    assert korean["error"].startswith("Jenkins 빌드 #3")
    shown_event = client.get(f"/api/autoscaling/events/{event.pk}", HTTP_ACCEPT_LANGUAGE="ko").json()
    assert shown_event["error"] == korean["error"]
    history = client.get(f"/api/autoscaling/instances/{instance.pk}", HTTP_ACCEPT_LANGUAGE="ko").json()["history"]
    assert history[-1]["reason"] == korean["change"]
    english = client.get("/api/autoscaling/decisions?service=svc-reader", HTTP_ACCEPT_LANGUAGE="en").json()
    assert english["results"][0]["reason"] == "Autoscaling of “svc-reader” is disabled."

    pages = {
        "decision": reverse("admin:events_scalingdecision_changelist"),
        "step": reverse("admin:events_scaleoutevent_change", args=[event.pk]),
        "error": reverse("admin:events_scaleoutevent_change", args=[event.pk]),
        "change": reverse("admin:fleet_managedinstance_change", args=[instance.pk]),
    }
    for what, url in pages.items():
        page = client.get(url, HTTP_ACCEPT_LANGUAGE="ko").content.decode()
        assert korean[what] in page, (what, url)


def test_api_pages_titles_and_docs_summaries_in_korean(client, db, language_reset):
    """The browsable API's page titles, every /api/docs/ operation summary and the admin's view-only list titles
    (Django's own Korean has a stray "1" there: "보기위한 1%s 를(을) 선택") read Korean."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("docs-reader", "docs@example.com", "pw-docs")
    client.force_login(user)
    page = client.get("/api/autoscaling/events", HTTP_ACCEPT="text/html", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "<title>스케일아웃 이벤트 – VM 오토스케일 포털 API</title>" in page
    assert "Django REST framework" not in visible_nodes(page)
    page = client.get("/api/templates/vms", HTTP_ACCEPT="text/html", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "<title>vCenter VM – VM 오토스케일 포털 API</title>" in page
    from autoscaling.models import IpPool

    pool = IpPool.objects.create(
        name="docs-pool", network="127.80.0.0/24", first_address="127.80.0.10", last_address="127.80.0.20"
    )
    titles = {
        "/api/autoscaling/ip-pools": "IP 풀",  # a router's list (suffix "List")
        f"/api/autoscaling/ip-pools/{pool.pk}/allocations": "IP 할당",  # an extra action
    }
    for url, name in titles.items():
        page = client.get(url, HTTP_ACCEPT="text/html", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
        assert f"<title>{name} – VM 오토스케일 포털 API</title>" in page, url

    schema = client.get("/api/schema/?format=json", HTTP_ACCEPT_LANGUAGE="ko").json()
    english = [
        f"{method.upper()} {path}: {op.get('summary')!r}"
        for path, operations in schema["paths"].items()
        for method, op in operations.items()
        if not re.search("[\uac00-\ud7a3]", op.get("summary") or "")
        or (op.get("description") and not re.search("[\uac00-\ud7a3]", op["description"]))
    ]
    assert not english, english

    title = client.get(reverse("admin:events_scalingdecision_changelist"), HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "조회할 스케일링 결정 선택" in title and "보기위한 1" not in title


def test_a_stored_message_renders_nested_parts_and_falls_back_to_its_text():
    from django.utils import translation

    from common.messages import Joined, Message, render, reported, stored

    reason = Message(
        "%(troubles)s, for %(seconds)d s.",
        {
            "troubles": Joined((Message("the guest heartbeat of VM %(vm)s is red", {"vm": "web-1"}), "F5 says no")),
            "seconds": 12.7,
        },
    )
    fields = stored(reason, "reason")
    assert fields["reason"] == "the guest heartbeat of VM web-1 is red; F5 says no, for 12 s."
    with translation.override("ko"):
        shown = render(fields["reason_msgid"], fields["reason_params"], fields["reason"])
    assert shown == "VM web-1의 게스트 하트비트가 빨간색입니다; F5 says no, 12초 동안."
    # A row whose parameters no longer fit its id shows its stored text; a pipeline report that does not fit its
    # id is kept as the text it came with.
    assert render("Reserved %(addresses)s.", {"other": 1}, "Reserved 127.0.0.1.") == "Reserved 127.0.0.1."
    assert reported("Reserved 127.0.0.1.", "Reserved %(addresses)s.", {"nope": 1}) == "Reserved 127.0.0.1."
    assert reported("plain text") == "plain text"
