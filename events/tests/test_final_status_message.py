"""The pipeline's final status message (pipeline/cli.py) comes with its message id and parameters, as its step
messages do: the portal stores the event's error with them and shows it in the reader's language."""

import pytest
from django.utils import translation

from events.models import ScaleOutEvent
from events.tests.conftest import give_token
from pipeline import cli, contract
from pipeline.state import PipelineState

pytestmark = pytest.mark.django_db

Status = ScaleOutEvent.Status
TOKEN = "token-of-the-final-status-xxxxxxxxxxxxxxxxx"


def post_status(client, event, body):
    return client.post(
        f"/api/events/{event.pk}/callback/status",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )


def failed_state(tmp_path, *, failure, vms=(), undo_failures=(), leftovers=()):
    state = PipelineState(tmp_path / "state.json")
    step, message = failure
    state.record_failure(step, message)
    state.data.update(vms=list(vms), undo_failures=list(undo_failures), leftovers=list(leftovers))
    return state


@pytest.fixture
def event(make_event):
    event = make_event(status=Status.RUNNING)
    give_token(event, TOKEN)
    return event


def test_a_rolled_back_builds_message_is_its_failure_shown_in_the_readers_language(client, event, tmp_path):
    port = contract.StepMessage(contract.gettext_noop("F5_MEMBER_PORT=%(port)r is not a port number."), {"port": "x"})
    body = cli.status_body(failed_state(tmp_path, failure=("f5_add", port)), "final")
    assert (body["status"], body["failed_step"]) == ("rolled_back", "f5_add")
    assert body["message"] == "F5_MEMBER_PORT='x' is not a port number."
    assert body["message_msgid"] == "F5_MEMBER_PORT=%(port)r is not a port number."

    assert post_status(client, event, body).status_code == 200
    event.refresh_from_db()
    assert event.status == Status.ROLLED_BACK and event.error == "F5_MEMBER_PORT='x' is not a port number."
    with translation.override("ko"):
        assert event.error_text == "F5_MEMBER_PORT='x'은(는) 포트 번호가 아닙니다."
    with translation.override("en"):
        assert event.error_text == event.error


def test_what_the_undo_left_keeps_its_words_and_the_failure_inside_is_translated(client, event, tmp_path):
    port = contract.StepMessage(contract.gettext_noop("F5_MEMBER_PORT=%(port)r is not a port number."), {"port": "x"})
    state = failed_state(
        tmp_path,
        failure=("f5_add", port),
        vms=[{"name": "web-001", "moid": "vm-1", "ip": "127.0.0.9"}],
        leftovers=["VM web-002 destroyed; IP 127.0.0.8 still allocated"],
    )
    body = cli.status_body(state, "final")
    # The English text is what it always was (tests, logs and the rows before the ids match it).
    assert body["status"] == "failed"
    assert body["message"] == (
        "F5_MEMBER_PORT='x' is not a port number. Left: VM web-002 destroyed; IP 127.0.0.8 still allocated. "
        "Undo incomplete: left VM web-001"
    )
    assert body["message_params"]["message"]["msgid"] == "%(message)s Left: %(left)s."
    assert body["message_params"]["message"]["params"]["message"]["msgid"] == port.msgid

    assert post_status(client, event, body).status_code == 200
    event.refresh_from_db()
    assert event.error == body["message"]
    assert event.error_msgid == "%(message)s Undo incomplete: left %(leftovers)s"
    with translation.override("ko"):
        assert event.error_text.startswith("F5_MEMBER_PORT='x'은(는) 포트 번호가 아닙니다.")
        assert "web-001" in event.error_text and "127.0.0.8" in event.error_text
    with translation.override("en"):
        assert event.error_text == body["message"]


def test_an_undo_that_failed_and_a_text_from_elsewhere_are_reported_as_they_came(client, event, tmp_path):
    state = failed_state(
        tmp_path, failure=("vm_clone", "vCenter said: no space left"), undo_failures=["rollback_vm: gone away"]
    )
    body = cli.status_body(state, "final")
    assert body["message"] == "vCenter said: no space left Undo incomplete: rollback_vm: gone away"
    assert post_status(client, event, body).status_code == 200
    event.refresh_from_db()
    with translation.override("ko"):
        assert "vCenter said: no space left" in event.error_text and "rollback_vm: gone away" in event.error_text


def test_a_build_that_stopped_before_any_step_failed_says_so(tmp_path):
    body = cli.status_body(PipelineState(tmp_path / "state.json"), "final")
    assert body["status"] == "rolled_back" and body["failed_step"] == ""
    assert body["message"] == "The build stopped (failed or aborted) before a step reported a failure."
    assert body["message_msgid"] == body["message"]


def test_an_empty_final_message_keeps_the_error_recorded_before(client, event):
    ScaleOutEvent.objects.filter(pk=event.pk).update(
        error="Jenkins lost the build.", error_msgid="Jenkins lost the build."
    )
    assert post_status(client, event, {"status": "failed"}).status_code == 200
    event.refresh_from_db()
    assert (event.error, event.error_msgid) == ("Jenkins lost the build.", "Jenkins lost the build.")
