"""Admin screens: event list (filters, search, colours), the live event page, notifications and decisions."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events.models import EventAction, ScaleOutEvent
from events.tests.conftest import firing_payload, post_webhook

pytestmark = pytest.mark.django_db

Status = ScaleOutEvent.Status
LIST = "/admin/events/scaleoutevent/"


@pytest.fixture
def events(make_config, make_event):
    web, db = make_config("web"), make_config("db")
    done = make_event(
        web,
        status=Status.SUCCEEDED,
        vm_names=["web-007"],
        vm_ips=["127.0.0.27"],
        build_number=41,
        finished_at=timezone.now(),
    )
    failed = make_event(web, status=Status.FAILED, error="clone failed", failed_step="vm_clone")
    other = make_event(db, status=Status.RUNNING, vm_names=["db-002"], vm_ips=["127.0.0.52"], build_number=5)
    return done, failed, other


def listed(admin_client, query=""):
    response = admin_client.get(LIST + query)
    assert response.status_code == 200
    return response.context["cl"].result_list


def test_event_list_filters_and_colours(admin_client, events):
    done, failed, other = events
    page = admin_client.get(LIST).content.decode()
    assert 'class="ev-badge ev-ok"' in page and 'class="ev-badge ev-bad"' in page
    assert "web-007 (127.0.0.27)" in page
    assert {e.pk for e in listed(admin_client, "?service=web")} == {done.pk, failed.pk}
    assert [e.pk for e in listed(admin_client, "?status__exact=running")] == [other.pk]
    ScaleOutEvent.objects.filter(pk=done.pk).update(created_at=timezone.now() - timedelta(days=40))
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    recent = {e.pk for e in listed(admin_client, "?" + urlencode({"created_at__gte": str(today)}))}
    assert recent == {failed.pk, other.pk}


@pytest.mark.parametrize(("term", "expected"), [("web-007", 0), ("127.0.0.52", 2), ("41", 0), ("#5", 2)])
def test_event_list_search_by_vm_ip_and_build(admin_client, events, term, expected):
    assert [e.pk for e in listed(admin_client, "?" + urlencode({"q": term}))] == [events[expected].pk]


def test_event_list_query_count_does_not_grow(admin_client, make_config, make_event):
    config = make_config("web")

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(LIST).status_code == 200
        return len(captured.captured_queries)

    make_event(config)
    few = queries()
    for _n in range(20):
        make_event(config, build_number=_n + 1)
    assert queries() == few


@pytest.mark.parametrize("query", ["", "?status__exact=failed", "?service=web&o=-2.1", "?q=web-007&p=0"])
def test_event_list_rows_are_what_django_renders(admin_client, admin_user, events, make_event, query):
    """The list's rows are built once per column (common/admin_rows.py): each cell must be the HTML Django's own
    items_for_result gives for it, links with their preserved filters included, and the page must show them."""
    from django.contrib.admin.templatetags.admin_list import results

    from common.admin_rows import _fast_results

    make_event(
        events[0].config,
        status=Status.ROLLED_BACK,
        action=ScaleOutEvent.Action.SCALE_IN,
        source=ScaleOutEvent.Source.MANUAL,
        requested_by=admin_user,
        build_number=7,
        build_url="http://127.0.0.1:1/job/vmautoscale-web/7/?a=1&b=<2>",
        vm_names=["web-008", "web-009"],
        vm_ips=["127.0.0.28"],
        vm_count=2,
        finished_at=timezone.now() + timedelta(minutes=3),
    )
    response = admin_client.get(LIST + query)
    assert response.status_code == 200
    cl = response.context["cl"]
    assert cl.result_list
    django_rows = [list(row) for row in results(cl)]
    fast = _fast_results(cl)
    assert fast is not None
    assert [list(row) for row in fast] == django_rows
    page = response.content.decode()
    assert all(cell in page for row in django_rows for cell in row)
    if query:
        assert "_changelist_filters=" in django_rows[0][0]


@pytest.mark.parametrize("query", ["", "?service=web&status__exact=failed", "?q=a+b&o=2"])
def test_the_service_filter_links_are_what_django_builds(admin_client, events, make_config, query):
    from django.contrib.admin import SimpleListFilter
    from django.template.loader import get_template

    from events.admin import ServiceListFilter

    make_config("a b+c/d&e")
    response = admin_client.get(LIST + query)
    cl = response.context["cl"]
    (spec,) = [spec for spec in cl.filter_specs if isinstance(spec, ServiceListFilter)]
    choices = list(spec.choices(cl))
    assert len(choices) == 4 and choices == list(SimpleListFilter.choices(spec, cl))
    assert choices[-1]["query_string"] in response.content.decode().replace("&amp;", "&")
    context = {"title": spec.title, "choices": choices, "spec": spec}
    ours, django = (get_template(name).render(context) for name in (spec.template, "admin/filter.html"))
    assert spec.template != "admin/filter.html" and ours == django


def test_event_page_shows_timeline_log_and_updates_itself(admin_client, make_event):
    event = make_event(
        status=Status.RUNNING,
        build_number=9,
        build_url="http://127.0.0.1:1/job/vmautoscale-web/9/",
        build_log="step output here",
    )
    start = timezone.now() - timedelta(seconds=30)
    EventAction.objects.create(
        event=event,
        step="vm_clone",
        status="succeeded",
        started_at=start,
        finished_at=start + timedelta(seconds=12),
        message="cloned web-001",
    )
    page = admin_client.get(f"{LIST}{event.pk}/change/").content.decode()
    assert "VM clone" in page and "12.0 s" in page and "cloned web-001" in page
    assert "step output here" in page
    assert 'href="http://127.0.0.1:1/job/vmautoscale-web/9/"' in page
    assert f'data-api-url="/api/autoscaling/events/{event.pk}"' in page and 'data-active="1"' in page
    assert "events/event_detail.js" in page
    assert "cdn" not in page.lower()
    # Read-only: no save button.
    assert 'name="_save"' not in page


def test_notifications_show_their_decisions(admin_client, client, webhook_settings, make_config):
    make_config("web", enabled=False)
    post_webhook(client, "web", firing_payload("web"))
    page = admin_client.get("/admin/events/alertnotification/").content.decode()
    assert "Config disabled" in page
    notification_id = admin_client.get("/admin/events/alertnotification/").context["cl"].result_list[0].pk
    detail = admin_client.get(f"/admin/events/alertnotification/{notification_id}/change/").content.decode()
    assert "Autoscaling of “web” is disabled." in detail or "Autoscaling of &ldquo;web&rdquo; is disabled." in detail
    decisions = admin_client.get("/admin/events/scalingdecision/?outcome__exact=disabled").content.decode()
    assert "is disabled" in decisions
