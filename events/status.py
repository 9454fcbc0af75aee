"""The state machines of a scale-out event and of its steps, and the only two functions that write a status.

Every status write is one conditional UPDATE ... WHERE status IN (the statuses the table allows before the new
one), so writers that race (a pipeline callback, the trigger, the sweep) can never move an event backwards or out
of a final status, with or without a row lock. The writers say whether they changed the row; what a refusal means
(a 409, nothing at all) is the caller's business.

The lowest module of the events stages: it imports no other of them.
"""

import hashlib

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.messages import stored
from events import safety
from events.models import EventAction, ScaleOutEvent

Status = ScaleOutEvent.Status
StepStatus = EventAction.Status

# --- the state machines (the only place that says which changes are possible) --------------------------------
EVENT_TRANSITIONS = {
    Status.PENDING: {
        Status.TRIGGERED,
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.ROLLED_BACK,
        Status.CANCELLED,
    },
    Status.TRIGGERED: {Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.CANCELLED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.CANCELLED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
    Status.ROLLED_BACK: set(),
    Status.CANCELLED: set(),
}
# A step may be reported as started, then finished once; a failed step may start again (a stage retried).
# None is a step not reported yet (no row).
STEP_TRANSITIONS = {
    None: {StepStatus.RUNNING, StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED},
    StepStatus.RUNNING: {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED},
    StepStatus.FAILED: {StepStatus.RUNNING},
    StepStatus.SUCCEEDED: set(),
    StepStatus.SKIPPED: set(),
}


def _predecessors(transitions):
    """new status -> the statuses it may be reached from (the WHERE of the conditional UPDATE)."""
    before = {}
    for current, allowed in transitions.items():
        for new in allowed:
            before.setdefault(new, set()).add(current)
    return before


_EVENT_BEFORE = _predecessors(EVENT_TRANSITIONS)
_STEP_BEFORE = _predecessors(STEP_TRANSITIONS)

# Where the pipeline reports; the pipeline appends "/status" or "/step".
CALLBACK_PATH = "/api/events/{event_id}/callback"


def callback_token_hash(token):
    """What is stored of an event's callback token (the token itself goes only to the build)."""
    return hashlib.sha256(token.encode()).hexdigest()


def event_transition_check(*, current, new):
    """None when an event may go from `current` to `new`, else the reason (for a 409)."""
    if new in EVENT_TRANSITIONS.get(current, set()):
        return None
    if current in ScaleOutEvent.FINAL_STATUSES:
        return _("Event has finished as %(current)s; it cannot become %(new)s.") % {"current": current, "new": new}
    return _("Event status cannot change from %(current)s to %(new)s.") % {"current": current, "new": new}


# --- the writers ---------------------------------------------------------------------------------------------
def event_status_set(*, event_id, new, only_from=None, **fields):
    """Move event `event_id` to status `new`, writing `fields` with it, when the transition table allows the change
    from the status the event has at that moment. Returns whether the event changed.

    `only_from` narrows the table for a writer that acts on fewer statuses (a cancelled queue item only ends an
    event whose build never started); it never widens it.
    """
    if "error" in fields:  # a Message or a text: stored with its id and parameters (common/messages.py)
        fields = {**fields, **stored(fields.pop("error"), "error")}
    allowed = _EVENT_BEFORE.get(new, set())
    if only_from is not None:
        allowed = allowed & set(only_from)
    if not allowed:
        return False
    if new in ScaleOutEvent.FINAL_STATUSES:
        # Every finished event has its time: the metrics' checkpoint and the retention go by it.
        fields.setdefault("finished_at", timezone.now())
    changed = ScaleOutEvent.objects.filter(pk=event_id, status__in=allowed).update(
        status=new, updated_at=timezone.now(), **fields
    )
    if changed and new in ScaleOutEvent.FINAL_STATUSES:
        safety.breaker_event_finished(event_id=event_id, status=new)
    return bool(changed)


def step_status_set(*, event_id, step, new, **fields):
    """Record step `step` of event `event_id` as `new`, writing `fields` with it, when the transition table allows
    the change from the step's status at that moment (a step not reported yet gets its row). Returns whether the
    step changed."""
    if "message" in fields:  # a Message or a text: stored with its id and parameters (common/messages.py)
        fields = {**fields, **stored(fields.pop("message"), "message")}
    allowed = _STEP_BEFORE.get(new, set())
    rows = EventAction.objects.filter(event_id=event_id, step=step)
    if rows.filter(status__in=allowed - {None}).update(status=new, **fields):
        return True
    if None not in allowed:
        return False
    try:
        # The row is unique per (event, step): when another writer created it a moment ago, the insert fails
        # inside its savepoint and the conditional update decides against the row that writer left.
        with transaction.atomic():
            EventAction.objects.create(event_id=event_id, step=step, status=new, **fields)
    except IntegrityError:
        return bool(rows.filter(status__in=allowed - {None}).update(status=new, **fields))
    return True


# --- the portal's own status changes -------------------------------------------------------------------------
def step_finish(*, event_id, step, status, message, details=None):
    """End a step the portal itself runs (the Jenkins trigger)."""
    fields = {"message": message, "finished_at": timezone.now()}
    if details is not None:
        fields["details"] = details
    return step_status_set(event_id=event_id, step=step, new=status, **fields)


def event_fail_pending(*, event_id, message):
    """The build of a pending event could not be started: the event fails at its trigger step."""
    return event_status_set(
        event_id=event_id,
        new=Status.FAILED,
        only_from=(Status.PENDING,),
        error=message,
        failed_step=EventAction.Step.TRIGGER,
        finished_at=timezone.now(),
    )


def event_fail_active(*, event_id, message):
    """An active event fails (its build ended without a final report), and with it the step that was running.
    Returns whether the event changed; a finished event stays as it is."""
    now = timezone.now()
    running = (
        EventAction.objects.filter(event_id=event_id, status=StepStatus.RUNNING)
        .order_by("-started_at")
        .values_list("step", flat=True)
        .first()
    )
    fields = {"error": message, "finished_at": now}
    if running is not None:
        fields["failed_step"] = running
    with transaction.atomic():
        if not event_status_set(event_id=event_id, new=Status.FAILED, **fields):
            return False
        if running is not None:
            step_status_set(event_id=event_id, step=running, new=StepStatus.FAILED, finished_at=now, message=message)
    return True
