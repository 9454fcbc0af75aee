"""Pipeline callbacks: the event's callback token, and the pipeline's status and step reports."""

import hmac
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from common.messages import Message, reported
from events.build_logs import event_build_log_fetch_queue
from events.models import EventAction, ScaleOutEvent
from events.status import (
    EVENT_TRANSITIONS,
    STEP_TRANSITIONS,
    Status,
    StepStatus,
    callback_token_hash,
    event_status_set,
    event_transition_check,
    step_status_set,
)
from fleet import services as fleet_services

# Statuses the pipeline may report; the portal sets pending, triggered and cancelled itself.
CALLBACK_EVENT_STATUSES = (Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK)
CALLBACK_STEPS = tuple(step for step in EventAction.Step.values if step != EventAction.Step.TRIGGER)


class CallbackRefused(Exception):
    """A pipeline callback is not allowed: `status_code` is 401, 403, 404 or 409 and the message says why."""

    def __init__(self, message, *, status_code):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def event_callback_authenticate(*, event_id, token, allow_finished=False):
    """The event a pipeline callback is for, when `token` is that event's callback token; else CallbackRefused.

    Other apps' pipeline endpoints (IP reservation) use this too. A finished event's token is refused unless
    `allow_finished` (the final-status callback, so that a retried curl is answered "no change").
    """
    if not token:
        raise CallbackRefused(_("Send the event's callback token as 'Authorization: Bearer <token>'."), status_code=401)
    event = ScaleOutEvent.objects.filter(pk=event_id).only("pk", "status", "callback_token_hash").first()
    if event is None:
        raise CallbackRefused(_("There is no event #%(event)s.") % {"event": event_id}, status_code=404)
    if not event.callback_token_hash or not hmac.compare_digest(callback_token_hash(token), event.callback_token_hash):
        raise CallbackRefused(
            _("This token is not the callback token of event #%(event)s.") % {"event": event_id}, status_code=403
        )
    if event.is_finished and not allow_finished:
        raise CallbackRefused(
            _("Event #%(event)s has finished (%(status)s); its callback token is no longer accepted.")
            % {"event": event_id, "status": event.status},
            status_code=403,
        )
    return event


@dataclass
class CallbackResult:
    event: ScaleOutEvent
    changed: bool
    action: EventAction | None = None


def event_status_report(
    *,
    event_id,
    status,
    message="",
    message_msgid="",
    message_params=None,
    failed_step="",
    vm_names=None,
    vm_ips=None,
    build_number=None,
    build_url="",
):
    """The pipeline reports the event's status. Repeating a report changes nothing; a finished event stays as is.

    A final status's message with `message_msgid` is stored as the event's error with that id and its parameters
    and shown in the reader's language (as a step's message is); `message` is its English text."""
    message = reported(message, message_msgid, message_params)
    with transaction.atomic():
        event = ScaleOutEvent.objects.select_for_update().get(pk=event_id)
        now = timezone.now()
        changed = {}
        if build_number is not None and event.build_number != build_number:
            changed["build_number"] = build_number
        if build_url and event.build_url != build_url:
            changed["build_url"] = build_url
        for name, value in (("vm_names", vm_names), ("vm_ips", vm_ips)):
            if value is not None and getattr(event, name) != list(value):
                changed[name] = list(value)

        if status != event.status:
            refusal = event_transition_check(current=event.status, new=status)
            if refusal:
                raise CallbackRefused(refusal, status_code=409)
            if status == Status.RUNNING or event.started_at is None:
                changed["started_at"] = event.started_at or now
            if event.triggered_at is None:
                changed["triggered_at"] = now
            if status in ScaleOutEvent.FINAL_STATUSES:
                changed["finished_at"] = now
                if status != Status.SUCCEEDED:
                    if message:  # else the error recorded before stays, with its id
                        changed["error"] = message
                    changed["failed_step"] = (failed_step or "")[:64]
            # The row is locked, so the table agrees with the check above; the write goes through it all the same.
            if not event_status_set(event_id=event.pk, new=status, **changed):
                current = ScaleOutEvent.objects.filter(pk=event.pk).values_list("status", flat=True).get()
                raise CallbackRefused(event_transition_check(current=current, new=status), status_code=409)
            if status in ScaleOutEvent.FINAL_STATUSES:
                transaction.on_commit(partial(event_build_log_fetch_queue, event_id=event.pk))
            if status in ScaleOutEvent.FINAL_STATUSES and status != Status.SUCCEEDED:
                fleet_services.event_instances_fail(
                    event_id=event.pk,
                    reason=Message(
                        gettext_noop("The scale-out ended %(status)s: %(message)s"),
                        {"status": status, "message": message or event.error},
                    ),
                )
            changed["status"] = status
        elif event.is_finished and changed:
            raise CallbackRefused(
                _("Event #%(event)s has finished (%(status)s); it cannot change any more.")
                % {"event": event.pk, "status": event.status},
                status_code=409,
            )
        elif changed:
            ScaleOutEvent.objects.filter(pk=event.pk).update(**changed, updated_at=now)
        for name, value in changed.items():
            setattr(event, name, str(value) if name == "error" else value)
        return CallbackResult(event=event, changed=bool(changed))


def event_step_report(*, event_id, step, status, message="", message_msgid="", message_params=None, details=None):
    """The pipeline reports one step starting or finishing. One row per (event, step), updated in place.

    With `message_msgid` (an id the pipeline marked for the portal's catalog) the message is stored as that id and
    its parameters and shown in the reader's language; `message` is its English text, kept as it came."""
    message = reported(message, message_msgid, message_params)
    with transaction.atomic():
        event = ScaleOutEvent.objects.select_for_update().get(pk=event_id)
        now = timezone.now()
        action = EventAction.objects.filter(event=event, step=step).first()
        current = action.status if action else None
        if current == status:
            return CallbackResult(event=event, changed=False, action=action)
        refusal = _("Step %(step)s is %(current)s; it cannot become %(new)s.") % {
            "step": step,
            "current": current,
            "new": status,
        }
        if status not in STEP_TRANSITIONS[current]:
            raise CallbackRefused(refusal, status_code=409)
        # No message: the one reported before stays (with its id).
        fields = {"message": message} if message or action is None else {}
        if details:
            fields["details"] = {**((action.details if action else None) or {}), **details}
        if status == StepStatus.RUNNING:
            fields.update(started_at=now, finished_at=None)
        else:
            fields.update(started_at=(action.started_at if action else None) or now, finished_at=now)
        if not step_status_set(event_id=event.pk, step=step, new=status, **fields):
            raise CallbackRefused(refusal, status_code=409)
        action = EventAction.objects.get(event=event, step=step)
        _instances_follow(event_id=event.pk, step=step, status=status, message=message or action.message)
        # A step report means the pipeline runs, even if its "running" status report was lost.
        bump = {"started_at": event.started_at or now, "triggered_at": event.triggered_at or now}
        if Status.RUNNING in EVENT_TRANSITIONS[event.status] and event_status_set(
            event_id=event.pk, new=Status.RUNNING, **bump
        ):
            event.refresh_from_db(fields=["status", "started_at", "triggered_at", "updated_at"])
        return CallbackResult(event=event, changed=True, action=action)


# Steps after which the pipeline's undo has destroyed every VM it recorded (or found none to destroy).
VMS_UNDONE = {StepStatus.SUCCEEDED, StepStatus.SKIPPED}


def _instances_follow(*, event_id, step, status, message):
    """A scale-out's instances follow its failures: a failed forward step fails those still being created, and the
    undo's VM step, once done, removes them (the pipeline itself reports their progress when all goes well)."""
    if status == StepStatus.FAILED and not step.startswith("rollback_"):
        fleet_services.event_instances_fail(
            event_id=event_id,
            reason=Message(gettext_noop("Step %(step)s failed: %(message)s"), {"step": step, "message": message}),
        )
    elif step == EventAction.Step.ROLLBACK_VM and status in VMS_UNDONE:
        fleet_services.event_instances_remove(
            event_id=event_id,
            reason=Message(
                gettext_noop("The pipeline's undo (%(step)s): %(message)s"), {"step": step, "message": message}
            ),
        )
