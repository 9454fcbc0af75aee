"""The event history at scale (issue 19): flat query counts, the bounded count, the indexed search by VM and IP."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common import pagination
from events.admin import ScaleOutEventAdmin
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
from events.selectors import EventHasVm

pytestmark = pytest.mark.django_db

API = "/api/autoscaling/events"
ADMIN = "/admin/events/scaleoutevent/"
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the GIN index is PostgreSQL's")


@pytest.fixture
def history(make_config):
    """120 events of two services, each with its steps, its notification and decision and its requester."""
    web, db = make_config("web"), make_config("db")
    users = get_user_model().objects.bulk_create(get_user_model()(username=f"op{n}") for n in range(3))
    now = timezone.now()
    events = []
    for n in range(120):
        config = web if n % 2 else db
        notification = AlertNotification.objects.create(
            service_name=config.service_name, config=config, status="firing", group_key="g", payload={}
        )
        event = ScaleOutEvent.objects.create(
            config=config,
            service_name=config.service_name,
            status="failed" if n % 3 else "succeeded",
            notification=notification,
            requested_by=users[n % 3],
            build_number=n + 1,
            vm_names=[f"{config.service_name}-{n:03d}", f"{config.service_name}-{n + 500:03d}"],
            vm_ips=[f"10.1.{n // 256}.{n % 256}"],
            finished_at=now,
        )
        for step in ("ip_allocate", "vm_clone", "f5_add"):
            EventAction.objects.create(event=event, step=step, status="succeeded", started_at=now)
        ScalingDecision.objects.create(
            notification=notification,
            service_name=config.service_name,
            config=config,
            outcome="scale_out",
            reason="r",
            event=event,
        )
        events.append(event)
    return events


def api_queries(client, query):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(API + query)
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()


@pytest.mark.parametrize("query", ["", "&status=failed", "&service=web&status=failed", "&vm=10.1.0.7"])
def test_api_page_queries_do_not_grow_with_the_page_size(admin_client, history, query):
    small, page_small = api_queries(admin_client, f"?page_size=10{query}")
    large, page_large = api_queries(admin_client, f"?page_size=100{query}")
    assert small == large
    expected = min(len(page_large["results"]), 10)
    assert len(page_small["results"]) == expected and page_small["count"] == page_large["count"]


def test_admin_list_queries_do_not_grow_with_the_page_size(admin_client, history, monkeypatch):
    def queries(size, query=""):
        monkeypatch.setattr(ScaleOutEventAdmin, "list_per_page", size)
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(ADMIN + query)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == min(size, response.context["cl"].result_count)
        return len(captured.captured_queries)

    assert queries(10) == queries(100)
    assert queries(10, "?status__exact=failed") == queries(100, "?status__exact=failed")
    assert queries(10, "?q=web-007") == queries(100, "?q=web")


def test_api_search_by_ip_or_vm_name(admin_client, history):
    by_ip = admin_client.get(f"{API}?vm=10.1.0.7").json()
    assert [row["id"] for row in by_ip["results"]] == [history[7].pk]
    # Every VM of an event is found, names and addresses; exact values only (no substring of another).
    assert [row["id"] for row in admin_client.get(f"{API}?vm=web-507").json()["results"]] == [history[7].pk]
    assert admin_client.get(f"{API}?vm=web-50").json()["count"] == 0
    assert admin_client.get(f"{API}?vm=10.1.0.1").json()["results"][0]["id"] == history[1].pk
    both = admin_client.get(f"{API}?vm=web-007&status=succeeded").json()
    assert both["count"] == 0  # event 7 failed
    assert admin_client.get(f"{API}?vm=nowhere").json() == {
        "count": 0,
        "count_exact": True,
        "next": None,
        "previous": None,
        "results": [],
    }


@pytest.mark.parametrize(
    ("term", "expected"),
    [("10.1.0.9", [9]), ("db-004", [4]), ("web-509", [9]), ("#12", [11]), (" 10.1.0.3 ", [3])],
)
def test_admin_search_by_ip_vm_name_build_and_id(admin_client, history, term, expected):
    response = admin_client.get(ADMIN, {"q": term})
    assert response.status_code == 200
    found = [event.pk for event in response.context["cl"].result_list]
    wanted = [history[n].pk for n in expected]
    if term == "#12":  # build 12 is event 11; event id 12 is whichever has that pk
        wanted = sorted({history[11].pk, *(e.pk for e in history if e.pk == 12)}, reverse=True)
    assert sorted(found, reverse=True) == wanted


def test_admin_search_by_service_reads_the_configs(admin_client, history):
    response = admin_client.get(ADMIN, {"q": "we"})
    assert response.context["cl"].result_count == 60
    assert admin_client.get(ADMIN, {"q": "a\x00b"}).status_code == 200


def test_the_count_is_exact_up_to_the_limit_then_bounded(admin_client, history, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 50)
    exact = admin_client.get(f"{API}?service=web&page_size=10").json()
    if connection.vendor == "postgresql":  # the planner's estimate, never below the limit
        assert exact["count"] > 50 and exact["count_exact"] is False
    else:
        assert (exact["count"], exact["count_exact"]) == (60, True)
    assert len(exact["results"]) == 10 and exact["next"]
    small = admin_client.get(f"{API}?service=web&status=succeeded&page_size=10").json()
    assert (small["count"], small["count_exact"]) == (20, True)
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 1000)
    assert admin_client.get(f"{API}?service=web").json()["count_exact"] is True
    admin = admin_client.get(ADMIN, {"status__exact": "failed"})
    assert admin.context["cl"].result_count == 80


@postgres_only
def test_the_count_beyond_the_limit_is_postgresql_estimate(history, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE events_scaleoutevent")
    count, exact = pagination.bounded_count(ScaleOutEvent.objects.filter(service_name="web"), limit=20)
    assert not exact and 20 < count <= 120


@postgres_only
@pytest.mark.parametrize("term", ["10.1.0.7", "web-007"])
def test_the_search_plan_uses_the_gin_index(history, term):
    queryset = ScaleOutEvent.objects.filter(EventHasVm(term))
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        # 120 rows are cheaper to scan than any index: forbid the scan to see whether the index serves the search.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "event_vms_gin" in plan, plan
    assert list(queryset) == [history[7]]


def test_choice_labels_follow_the_reader_language(admin_client, history):
    def labels(language):
        page = admin_client.get(f"{API}?page_size=3&ordering=id", HTTP_ACCEPT_LANGUAGE=language).json()
        return [row["status_display"] for row in page["results"]]

    assert labels("en") == ["Succeeded", "Failed", "Failed"]
    assert labels("ko") == ["성공", "실패", "실패"]
    assert labels("en") == ["Succeeded", "Failed", "Failed"]
    page = admin_client.get(ADMIN, HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert 'class="ev-badge ev-bad">실패<' in page
