"""Every writer of an event's or a step's status refuses every change the transition tables do not allow.

Each illegal (current, new) pair goes through every writer that can write `new`; the status in the database must
stay `current`. A legal change through each writer shows the refusals are not the writer doing nothing at all.
"""

import itertools

import pytest
from django.conf import settings

import jenkins as python_jenkins
from common.clients import jenkins_client
from events import callbacks, status, trigger
from events.callbacks import CallbackRefused
from events.models import EventAction, ScaleOutEvent
from events.status import EVENT_TRANSITIONS, STEP_TRANSITIONS

pytestmark = pytest.mark.django_db

Status = ScaleOutEvent.Status
StepStatus = EventAction.Status
Step = EventAction.Step

ILLEGAL_EVENT = [
    (current, new) for current, new in itertools.product(Status, Status) if new not in EVENT_TRANSITIONS[current]
]
LEGAL_EVENT = [(current, new) for current, allowed in EVENT_TRANSITIONS.items() for new in sorted(allowed)]
# A step with no row yet (None) may become anything, so every illegal pair starts from a reported status.
ILLEGAL_STEP = [
    (current, new) for current, new in itertools.product(StepStatus, StepStatus) if new not in STEP_TRANSITIONS[current]
]


def _pair_id(pair):
    return f"{pair[0]}->{pair[1]}"


# --- the event writers: each takes the event and the new status it was asked for ----------------------------
def _status_set(event, new):
    assert status.event_status_set(event_id=event.pk, new=new, error="written") is False


def _status_callback(event, new):
    try:
        result = callbacks.event_status_report(event_id=event.pk, status=new, message="written")
    except CallbackRefused as exc:
        assert exc.status_code == 409
    else:
        assert result.changed is False  # only an exact repeat is answered without a refusal
        assert new == event.status


def _mark_triggered(event, new):
    trigger._mark_triggered(event, event.jenkins_job, queue_id=17, build=None)


def _trigger_task(event, new):
    trigger.event_trigger(event_id=event.pk)


def _fail_pending(event, new):
    assert status.event_fail_pending(event_id=event.pk, message="written") is False


def _fail_active(event, new):
    assert status.event_fail_active(event_id=event.pk, message="written") is False


def _step_report_bump(event, new):
    callbacks.event_step_report(event_id=event.pk, step=Step.VM_CLONE, status=StepStatus.RUNNING)


# writer -> the statuses it writes (None: any status it is asked for)
EVENT_WRITERS = {
    "event_status_set": (_status_set, None),
    "status callback": (_status_callback, None),
    "mark triggered": (_mark_triggered, {Status.TRIGGERED}),
    "trigger task": (_trigger_task, {Status.TRIGGERED, Status.FAILED}),
    "fail pending": (_fail_pending, {Status.FAILED}),
    "fail active (sweep)": (_fail_active, {Status.FAILED}),
    "step report bump": (_step_report_bump, {Status.RUNNING}),
}
EVENT_CASES = [
    pytest.param(name, current, new, id=f"{name}:{current}->{new}")
    for name, (_writer, writes) in EVENT_WRITERS.items()
    for current, new in ILLEGAL_EVENT
    if writes is None or new in writes
]


def test_every_illegal_event_transition_is_a_case():
    # Seven statuses, 15 legal changes: 34 illegal pairs, each through at least the status function and the callback.
    assert len(ILLEGAL_EVENT) == 7 * 7 - len(LEGAL_EVENT) == 34
    covered = {(current, new) for _name, current, new in (case.values for case in EVENT_CASES)}
    assert covered == set(ILLEGAL_EVENT)
    assert ILLEGAL_CANCEL == [(current, Status.CANCELLED) for current in ScaleOutEvent.FINAL_STATUSES]


@pytest.mark.parametrize(("writer", "current", "new"), EVENT_CASES)
def test_an_illegal_event_transition_is_refused_by_every_writer(writer, current, new, make_event):
    event = make_event(status=current, error="before")
    EVENT_WRITERS[writer][0](event, new)
    after = ScaleOutEvent.objects.get(pk=event.pk)
    assert after.status == current
    assert after.error == "before"


# The queue follower writes only "cancelled", from a queue item the Jenkins stand-in cancelled.
ILLEGAL_CANCEL = [(current, new) for current, new in ILLEGAL_EVENT if new == Status.CANCELLED]


@pytest.mark.lab
@pytest.mark.parametrize(("current", "new"), ILLEGAL_CANCEL, ids=map(_pair_id, ILLEGAL_CANCEL))
def test_a_cancelled_queue_item_never_makes_an_illegal_transition(current, new, jenkins, jenkins_job, make_event):
    event = make_event(status=current, error="before", jenkins_job=jenkins_job("web"))
    queue_id = _cancelled_queue_item(jenkins, event.jenkins_job)
    trigger.event_queue_follow(
        client=jenkins_client(), event_id=event.pk, job=event.jenkins_job, queue_id=queue_id, wait=0
    )
    after = ScaleOutEvent.objects.get(pk=event.pk)
    assert (after.status, after.error) == (current, "before")


def _follow(event, queue_id):
    trigger.event_queue_follow(
        client=jenkins_client(), event_id=event.pk, job=event.jenkins_job, queue_id=queue_id, wait=0
    )


def _cancelled_queue_item(jenkins, job):
    """A queue item of `job` cancelled in the stand-in before it became a build."""
    jenkins.set_build_behaviour(job=job, queue_delay=30.0)
    queue_id = jenkins_client().build_job(job, {"EVENT_ID": "0"})
    python_jenkins.Jenkins(settings.JENKINS_URL, settings.JENKINS_USER, settings.JENKINS_TOKEN).cancel_queue(queue_id)
    assert jenkins_client().queue_item(queue_id).cancelled
    return queue_id


# --- the legal changes do happen -----------------------------------------------------------------------------
@pytest.mark.parametrize(("current", "new"), LEGAL_EVENT, ids=map(_pair_id, LEGAL_EVENT))
def test_a_legal_event_transition_is_written_by_the_status_function(current, new, make_event):
    event = make_event(status=current)
    assert status.event_status_set(event_id=event.pk, new=new, error="written") is True
    after = ScaleOutEvent.objects.get(pk=event.pk)
    assert (after.status, after.error) == (new, "written")
    assert after.updated_at > event.updated_at


@pytest.mark.parametrize(("current", "new"), LEGAL_EVENT, ids=map(_pair_id, LEGAL_EVENT))
def test_a_legal_event_transition_is_written_by_the_status_callback(current, new, make_event):
    event = make_event(status=current)
    assert callbacks.event_status_report(event_id=event.pk, status=new).changed is True
    assert ScaleOutEvent.objects.get(pk=event.pk).status == new


@pytest.mark.parametrize(
    ("writer", "current", "new"),
    [
        ("mark triggered", Status.PENDING, Status.TRIGGERED),
        ("fail pending", Status.PENDING, Status.FAILED),
        ("fail active (sweep)", Status.RUNNING, Status.FAILED),
        ("fail active (sweep)", Status.TRIGGERED, Status.FAILED),
        ("step report bump", Status.PENDING, Status.RUNNING),
        ("step report bump", Status.TRIGGERED, Status.RUNNING),
    ],
)
def test_each_portal_writer_makes_its_own_change(writer, current, new, make_event):
    event = make_event(status=current)
    {
        "mark triggered": lambda: trigger._mark_triggered(event, event.jenkins_job, queue_id=17, build=None),
        "fail pending": lambda: status.event_fail_pending(event_id=event.pk, message="written"),
        "fail active (sweep)": lambda: status.event_fail_active(event_id=event.pk, message="written"),
        "step report bump": lambda: callbacks.event_step_report(
            event_id=event.pk, step=Step.VM_CLONE, status="running"
        ),
    }[writer]()
    assert ScaleOutEvent.objects.get(pk=event.pk).status == new


@pytest.mark.lab
def test_a_cancelled_queue_item_cancels_a_triggered_event(jenkins, jenkins_job, make_event):
    event = make_event(status=Status.TRIGGERED, jenkins_job=jenkins_job("web"))
    queue_id = _cancelled_queue_item(jenkins, event.jenkins_job)
    trigger.event_queue_follow(
        client=jenkins_client(), event_id=event.pk, job=event.jenkins_job, queue_id=queue_id, wait=0
    )
    after = ScaleOutEvent.objects.get(pk=event.pk)
    assert after.status == Status.CANCELLED
    assert after.error.startswith("The Jenkins queue item was cancelled")


# --- writers narrower than the table keep their own rule ---------------------------------------------------
@pytest.mark.parametrize("current", [Status.TRIGGERED, Status.RUNNING])
def test_a_failed_trigger_fails_only_a_pending_event(current, make_event):
    event = make_event(status=current)
    assert status.event_fail_pending(event_id=event.pk, message="written") is False
    assert ScaleOutEvent.objects.get(pk=event.pk).status == current


@pytest.mark.lab
def test_a_cancelled_queue_item_leaves_a_running_event_alone(jenkins, jenkins_job, make_event):
    event = make_event(status=Status.RUNNING, jenkins_job=jenkins_job("web"))
    queue_id = _cancelled_queue_item(jenkins, event.jenkins_job)
    trigger.event_queue_follow(
        client=jenkins_client(), event_id=event.pk, job=event.jenkins_job, queue_id=queue_id, wait=0
    )
    assert ScaleOutEvent.objects.get(pk=event.pk).status == Status.RUNNING


# --- steps ---------------------------------------------------------------------------------------------------
def _step_set(event, step, new):
    assert status.step_status_set(event_id=event.pk, step=step, new=new, message="written") is False


def _step_callback(event, step, new):
    try:
        result = callbacks.event_step_report(event_id=event.pk, step=step, status=new, message="written")
    except CallbackRefused as exc:
        assert exc.status_code == 409
    else:
        assert result.changed is False


def _step_finish(event, step, new):
    assert status.step_finish(event_id=event.pk, step=step, status=new, message="written") is False


STEP_WRITERS = {
    "step_status_set": (_step_set, None),
    "step callback": (_step_callback, None),
    "step finish (trigger)": (_step_finish, {StepStatus.SUCCEEDED, StepStatus.FAILED}),
}
STEP_CASES = [
    pytest.param(name, current, new, id=f"{name}:{current}->{new}")
    for name, (_writer, writes) in STEP_WRITERS.items()
    for current, new in ILLEGAL_STEP
    if writes is None or new in writes
]


def test_every_illegal_step_transition_is_a_case():
    assert len(ILLEGAL_STEP) == 12
    covered = {(current, new) for _name, current, new in (case.values for case in STEP_CASES)}
    assert covered == set(ILLEGAL_STEP)


@pytest.mark.parametrize(("writer", "current", "new"), STEP_CASES)
def test_an_illegal_step_transition_is_refused_by_every_writer(writer, current, new, make_event):
    event = make_event(status=Status.RUNNING)
    step = Step.TRIGGER if writer == "step finish (trigger)" else Step.VM_CLONE
    EventAction.objects.create(event=event, step=step, status=current, message="before")
    STEP_WRITERS[writer][0](event, step, new)
    action = EventAction.objects.get(event=event, step=step)
    assert (action.status, action.message) == (current, "before")


def test_a_restarted_trigger_does_not_reopen_a_finished_trigger_step(make_event):
    event = make_event(status=Status.PENDING)
    EventAction.objects.create(event=event, step=Step.TRIGGER, status=StepStatus.SUCCEEDED, message="before")
    trigger._trigger_step_start(event.pk, event.created_at)
    action = EventAction.objects.get(event=event, step=Step.TRIGGER)
    assert (action.status, action.message) == (StepStatus.SUCCEEDED, "before")


@pytest.mark.parametrize(
    ("current", "new"),
    [(current, new) for current, allowed in STEP_TRANSITIONS.items() for new in sorted(allowed)],
    ids=lambda value: str(value),
)
def test_a_legal_step_transition_is_written_by_the_step_function(current, new, make_event):
    event = make_event(status=Status.RUNNING)
    if current is not None:
        EventAction.objects.create(event=event, step=Step.VM_CLONE, status=current, message="before")
    assert status.step_status_set(event_id=event.pk, step=Step.VM_CLONE, new=new, message="written") is True
    action = EventAction.objects.get(event=event, step=Step.VM_CLONE)
    assert (action.status, action.message) == (new, "written")
