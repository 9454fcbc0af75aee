"""The pipeline's callbacks: token per event, idempotent step and status reports, the state machine."""

import pytest
from django_q.models import OrmQ

from events import build_logs
from events.models import EventAction, ScaleOutEvent
from events.tests.conftest import give_token

pytestmark = pytest.mark.django_db

Status = ScaleOutEvent.Status
TOKEN = "token-of-event-one-xxxxxxxxxxxxxxxxxxxxxxxx"


@pytest.fixture
def event(make_event):
    event = make_event(status=Status.TRIGGERED)
    give_token(event, TOKEN)
    return event


def post(client, event_id, kind, body, token=TOKEN):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.post(f"/api/events/{event_id}/callback/{kind}", data=body, content_type="application/json", **headers)


def test_step_start_and_finish_are_recorded_once_with_duration(client, event):
    first = post(client, event.pk, "step", {"step": "vm_clone", "status": "running", "message": "cloning"})
    assert first.status_code == 200
    assert first.json() == {
        "event": event.pk,
        "status": "running",
        "changed": True,
        "step": "vm_clone",
        "step_status": "running",
    }
    again = post(client, event.pk, "step", {"step": "vm_clone", "status": "running"})
    assert again.status_code == 200 and again.json()["changed"] is False
    done = post(client, event.pk, "step", {"step": "vm_clone", "status": "succeeded", "details": {"vm": "web-001"}})
    assert done.status_code == 200 and done.json()["changed"] is True
    assert post(client, event.pk, "step", {"step": "vm_clone", "status": "succeeded"}).json()["changed"] is False

    action = EventAction.objects.get(event=event)
    assert action.status == EventAction.Status.SUCCEEDED
    assert action.details == {"vm": "web-001"}
    assert action.message == "cloning"
    assert action.duration_seconds is not None and action.duration_seconds >= 0
    event.refresh_from_db()
    assert event.status == Status.RUNNING and event.started_at is not None


@pytest.mark.parametrize(
    ("first", "then"),
    [("succeeded", "running"), ("succeeded", "failed"), ("skipped", "succeeded")],
)
def test_impossible_step_change_is_409_with_reason(client, event, first, then):
    post(client, event.pk, "step", {"step": "f5_add", "status": first})
    response = post(client, event.pk, "step", {"step": "f5_add", "status": then})
    assert response.status_code == 409
    assert f"f5_add is {first}; it cannot become {then}" in response.json()["detail"]
    assert EventAction.objects.get(event=event).status == first


def test_failed_step_may_be_retried(client, event):
    post(client, event.pk, "step", {"step": "vm_guest_ip", "status": "failed"})
    assert post(client, event.pk, "step", {"step": "vm_guest_ip", "status": "running"}).status_code == 200
    assert post(client, event.pk, "step", {"step": "vm_guest_ip", "status": "succeeded"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"step": "make_coffee", "status": "running"}, "step"),
        ({"step": "trigger", "status": "running"}, "step"),
        ({"step": "vm_clone", "status": "done"}, "status"),
        ({"status": "running"}, "step"),
    ],
)
def test_bad_step_report_is_400(client, event, body, field):
    response = post(client, event.pk, "step", body)
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_status_reports_and_final_status_queues_the_log_fetch(client, event, django_capture_on_commit_callbacks):
    running = post(
        client, event.pk, "status", {"status": "running", "build_number": 7, "build_url": "http://127.0.0.1:1/job/x/7/"}
    )
    assert running.status_code == 200 and running.json()["changed"] is True
    assert post(client, event.pk, "status", {"status": "running"}).json()["changed"] is False
    with django_capture_on_commit_callbacks(execute=True):
        done = post(
            client,
            event.pk,
            "status",
            {"status": "succeeded", "vm_names": ["web-001"], "vm_ips": ["127.0.0.21"], "message": "ok"},
        )
    assert done.status_code == 200
    event.refresh_from_db()
    assert event.status == Status.SUCCEEDED
    assert event.build_number == 7
    assert event.vm_names == ["web-001"] and event.vm_ips == ["127.0.0.21"]
    assert event.finished_at is not None and event.error == ""
    assert OrmQ.objects.get().task["func"] is build_logs.event_build_log_fetch

    # A retried final report changes nothing; anything else after the end is refused.
    repeat = post(client, event.pk, "status", {"status": "succeeded"})
    assert repeat.status_code == 200 and repeat.json()["changed"] is False
    other = post(client, event.pk, "status", {"status": "failed", "message": "late"})
    assert other.status_code == 409
    assert "succeeded" in other.json()["detail"]
    step = post(client, event.pk, "step", {"step": "health_check", "status": "running"})
    assert step.status_code == 403
    assert "no longer accepted" in step.json()["detail"]
    event.refresh_from_db()
    assert event.status == Status.SUCCEEDED and event.error == ""


def test_rolled_back_records_the_failing_step_and_message(client, event):
    post(client, event.pk, "status", {"status": "running"})
    response = post(
        client,
        event.pk,
        "status",
        {"status": "rolled_back", "failed_step": "f5_add", "message": "F5 could not be reached"},
    )
    assert response.status_code == 200
    event.refresh_from_db()
    assert event.status == Status.ROLLED_BACK
    assert event.failed_step == "f5_add"
    assert event.error == "F5 could not be reached"


def test_another_events_token_is_refused(client, event, make_event):
    other = make_event(config=event.config, status=Status.TRIGGERED)
    give_token(other, "token-of-event-two-yyyyyyyyyyyyyyyyyyyyyyyy")
    response = post(client, other.pk, "status", {"status": "running"})
    assert response.status_code == 403
    assert f"not the callback token of event #{other.pk}" in response.json()["detail"]
    assert post(client, other.pk, "step", {"step": "vm_clone", "status": "running"}).status_code == 403
    other.refresh_from_db()
    assert other.status == Status.TRIGGERED
    assert not other.actions.exists()


def test_missing_token_is_401_and_unknown_event_404(client, event):
    response = post(client, event.pk, "status", {"status": "running"}, token=None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert post(client, event.pk + 1000, "status", {"status": "running"}).status_code == 404


def test_event_without_a_token_yet_refuses_everything(client, make_event):
    pending = make_event()
    assert post(client, pending.pk, "status", {"status": "running"}, token="anything").status_code == 403


def test_bad_status_report_is_400(client, event):
    response = post(client, event.pk, "status", {"status": "pending"})
    assert response.status_code == 400
    assert "status" in response.json()["detail"]
    assert post(client, event.pk, "status", {"status": "running", "vm_ips": ["not-an-ip"]}).status_code == 400
