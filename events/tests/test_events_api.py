"""Events API (manual scale-out, list, detail), notifications and decisions lists, Jenkins build history."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events.models import EventAction, ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, post_webhook

pytestmark = pytest.mark.django_db

Status = ScaleOutEvent.Status


# --- manual scale-out ----------------------------------------------------------------------------------------
def test_manual_scale_out_creates_an_event(admin_client, admin_user, make_config):
    make_config("web", scale_out_step=1, max_instances=5)
    response = admin_client.post(
        "/api/autoscaling/events", {"service_name": "web", "vm_count": 2, "reason": "load test"}, "application/json"
    )
    assert response.status_code == 201
    body = response.json()
    event = ScaleOutEvent.objects.get()
    assert body["id"] == event.pk and body["status"] == "pending" and body["vm_count"] == 2
    assert event.source == ScaleOutEvent.Source.MANUAL
    assert event.requested_by == admin_user
    assert event.reason == "load test"
    assert ScalingDecision.objects.get().outcome == ScalingDecision.Outcome.SCALE_OUT


def test_manual_scale_out_goes_through_the_same_decisions(admin_client, make_config):
    make_config("web")
    assert admin_client.post("/api/autoscaling/events", {"service_name": "web"}, "application/json").status_code == 201
    again = admin_client.post("/api/autoscaling/events", {"service_name": "web"}, "application/json")
    assert again.status_code == 409
    assert again.json()["outcome"] == "cooldown"
    assert "cooldown" in again.json()["detail"]
    assert ScaleOutEvent.objects.count() == 1
    assert ScalingDecision.objects.filter(outcome="cooldown").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service_name": "ghost"}, "service_name"),
        ({"service_name": "web", "vm_count": 0}, "vm_count"),
        ({}, "service_name"),
    ],
)
def test_manual_scale_out_bad_input_is_400(admin_client, make_config, body, field):
    make_config("web")
    response = admin_client.post("/api/autoscaling/events", body, "application/json")
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert ScaleOutEvent.objects.count() == 0


def test_events_api_needs_a_login(client, make_event):
    make_event()
    assert client.get("/api/autoscaling/events").status_code in (401, 403)
    assert client.post("/api/autoscaling/events", {"service_name": "web"}, "application/json").status_code in (401, 403)


# --- list and detail -----------------------------------------------------------------------------------------
def test_list_filters_orders_and_paginates(admin_client, make_config, make_event):
    web, db = make_config("web"), make_config("db")
    now = timezone.now()
    old = make_event(web, status=Status.SUCCEEDED)
    ScaleOutEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=3))
    recent = make_event(web, status=Status.FAILED)
    other = make_event(db, status=Status.SUCCEEDED)

    def ids(query):
        response = admin_client.get("/api/autoscaling/events" + query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids("") == [other.pk, recent.pk, old.pk]
    assert ids("?service=web") == [recent.pk, old.pk]
    assert ids("?status=succeeded") == [other.pk, old.pk]
    assert ids("?status=succeeded&status=failed&service=web") == [recent.pk, old.pk]
    after = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"?created_after={after}") == [other.pk, recent.pk]
    assert ids(f"?created_before={after}") == [old.pk]
    assert ids("?ordering=created_at") == [old.pk, recent.pk, other.pk]
    page = admin_client.get("/api/autoscaling/events?page_size=1").json()
    assert page["count"] == 3
    bad = admin_client.get("/api/autoscaling/events?created_after=yesterday")
    assert bad.status_code == 400


def test_list_query_count_does_not_grow_with_page_size(admin_client, make_config, make_event, admin_user):
    config = make_config("web")
    for n in range(30):
        make_event(config, requested_by=admin_user, vm_names=[f"web-{n}"])

    def queries(size):
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(f"/api/autoscaling/events?page_size={size}")
        assert response.status_code == 200
        return len(captured.captured_queries)

    assert queries(5) == queries(30)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Seoul"])
def test_the_list_rows_are_what_the_declared_fields_give(admin_client, make_config, make_event, admin_user, zone):
    """The list serializer reads its rows directly (ScaleOutEventSerializer.to_representation): every field must be
    what DRF's own path over the declared fields gives, in the API's JSON too."""
    from rest_framework import serializers as drf

    from events.api.serializers import ScaleOutEventSerializer

    config = make_config("web")
    now = timezone.now()
    make_event(config)
    make_event(
        config,
        status=Status.FAILED,
        source=ScaleOutEvent.Source.MANUAL,
        action=ScaleOutEvent.Action.SCALE_IN,
        requested_by=admin_user,
        reason="load test",
        error="clone failed",
        failed_step="vm_clone",
        alert_name="AutoscaleHighCpu",
        alert_starts_at=now - timedelta(minutes=5, microseconds=7),
        build_number=12,
        build_url="http://127.0.0.1:1/job/vmautoscale-web/12/",
        vm_names=["web-003", "web-004"],
        vm_ips=["10.0.0.13", "10.0.0.14"],
        vm_count=2,
        triggered_at=now,
        started_at=now + timedelta(seconds=3),
        finished_at=now + timedelta(seconds=250, microseconds=500),
    )
    with timezone.override(zone):
        events = list(ScaleOutEvent.objects.select_related("requested_by").order_by("-created_at", "-id"))
        serializer = ScaleOutEventSerializer()
        declared = [drf.ModelSerializer.to_representation(serializer, event) for event in events]
        fast = ScaleOutEventSerializer(events, many=True).data
        fields = ScaleOutEventSerializer.Meta.fields
        assert [list(row) for row in fast] == [list(row) for row in declared] == [fields, fields]
        assert fast == declared
        assert declared[0]["requested_by"] == admin_user.username and declared[0]["finished_at"]
        assert declared[1]["requested_by"] is None and declared[1]["finished_at"] is None
    response = admin_client.get("/api/autoscaling/events")
    with timezone.override("UTC"):
        assert response.json()["results"] == [drf.ModelSerializer.to_representation(serializer, e) for e in events]


def test_detail_has_the_step_timeline_and_jenkins_info(admin_client, make_event):
    event = make_event(status=Status.RUNNING, build_number=3, build_url="http://127.0.0.1:1/job/vmautoscale-web/3/")
    start = timezone.now() - timedelta(seconds=10)
    EventAction.objects.create(
        event=event, step="ip_allocate", status="succeeded", started_at=start, finished_at=start + timedelta(seconds=2)
    )
    EventAction.objects.create(event=event, step="vm_clone", status="running", started_at=start + timedelta(seconds=2))
    body = admin_client.get(f"/api/autoscaling/events/{event.pk}").json()
    assert [a["step"] for a in body["actions"]] == ["ip_allocate", "vm_clone"]
    assert body["actions"][0]["duration_seconds"] == 2.0
    assert body["actions"][1]["duration_seconds"] is None
    assert body["jenkins"]["build_number"] == 3
    assert body["jenkins"]["log_api"] == "/api/jenkins/jobs/vmautoscale-web/builds/3/log"
    assert body["is_active"] is True
    assert "callback_token_hash" not in body
    assert admin_client.get(f"/api/autoscaling/events/{event.pk + 99}").status_code == 404


# --- notifications and decisions -----------------------------------------------------------------------------
def test_notifications_list_shows_why_a_service_did_or_did_not_scale(
    admin_client, webhook_settings, make_config, client
):
    make_config("web")
    post_webhook(client, "web", firing_payload("web"))
    post_webhook(client, "web", firing_payload("web"))
    body = admin_client.get("/api/autoscaling/notifications?service=web").json()
    assert body["count"] == 2
    assert [n["decisions"][0]["outcome"] for n in body["results"]] == ["duplicate", "scale_out"]
    detail = admin_client.get(f"/api/autoscaling/notifications/{body['results'][0]['id']}").json()
    assert detail["payload"]["groupKey"].endswith('service="web"}')

    decisions = admin_client.get("/api/autoscaling/decisions?outcome=duplicate").json()
    assert decisions["count"] == 1
    assert "already scaled out as event" in decisions["results"][0]["reason"]


# --- Jenkins build history -----------------------------------------------------------------------------------
@pytest.mark.lab
def test_jenkins_build_history(admin_client, jenkins, jenkins_job, make_event):
    from events import trigger

    job = jenkins_job("web")
    jenkins.set_build_behaviour(duration=0.05, log_lines=["hello from the pipeline"])
    event = make_event()
    trigger.event_trigger(event_id=event.pk)
    jenkins.wait_build(job, 1)

    builds = admin_client.get(f"/api/jenkins/jobs/{job}/builds?limit=5")
    assert builds.status_code == 200
    assert [b["number"] for b in builds.json()] == [1]
    detail = admin_client.get(f"/api/jenkins/jobs/{job}/builds/1").json()
    assert detail["result"] == "SUCCESS" and detail["building"] is False
    assert detail["parameters"]["EVENT_ID"] == str(event.pk)
    assert detail["parameters"]["CALLBACK_TOKEN"] == "********"
    log = admin_client.get(f"/api/jenkins/jobs/{job}/builds/1/log")
    assert log.status_code == 200 and log["Content-Type"].startswith("text/plain")
    assert "hello from the pipeline" in log.content.decode()

    missing_job = admin_client.get("/api/jenkins/jobs/vmautoscale-nope/builds")
    assert missing_job.status_code == 404 and "job vmautoscale-nope" in missing_job.json()["detail"]
    assert admin_client.get(f"/api/jenkins/jobs/{job}/builds/99").status_code == 404
    assert admin_client.get(f"/api/jenkins/jobs/{job}/builds/99/log").status_code == 404
    assert admin_client.get(f"/api/jenkins/jobs/{job}/builds?limit=0").status_code == 400


@pytest.mark.lab
def test_jenkins_unreachable_is_502_with_reason(admin_client, jenkins, settings):
    from lab.core import free_port

    settings.JENKINS_URL = f"http://127.0.0.1:{free_port()}/"
    response = admin_client.get("/api/jenkins/jobs/vmautoscale-web/builds")
    assert response.status_code == 502
    assert "could not be reached" in response.json()["detail"]


@pytest.mark.lab
def test_jenkins_server_error_is_502(admin_client, jenkins, jenkins_job):
    job = jenkins_job("web")
    jenkins.fail_next(1, 500, path="/api/json")
    response = admin_client.get(f"/api/jenkins/jobs/{job}/builds")
    assert response.status_code == 502
    assert "500" in response.json()["detail"]


def test_jenkins_api_needs_a_login(client):
    assert client.get("/api/jenkins/jobs/vmautoscale-web/builds").status_code in (401, 403)
