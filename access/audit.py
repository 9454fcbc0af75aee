"""The audit trail: who changed what, when and through which door (admin, API, pipeline, command, system).

django-auditlog writes an entry (the fields before and after) for every save and delete of a registered model,
in the transaction of the change. This module adds the door:
- `door(...)` says which door the code inside runs for (AuditDoorMiddleware for requests, AuditedCommand for
  commands; nothing said: the system, i.e. tasks, schedules and the webhook);
- `operation(name)` labels the changes made inside with the operator action that made them (enable, ...);
- `operator_action(...)` records an operator action that is no model change (a sync, a reconcile, a manual
  scale-out); the system's own passes are not operator actions and are not recorded.
Writes that bypass model signals (QuerySet.update) record themselves with `change_record`.
"""

import contextlib
import dataclasses
import logging
from contextvars import ContextVar
from datetime import timedelta

from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import pre_save
from django.utils import timezone

from access.models import AuditEntry

logger = logging.getLogger(__name__)

Door = AuditEntry.Door
Action = AuditEntry.Action


@dataclasses.dataclass(frozen=True)
class _Context:
    door: str = Door.SYSTEM
    detail: str = ""
    user: object = None
    request: object = None
    operation: str = ""


SYSTEM = _Context()
_current = ContextVar("audit_context", default=None)


def current():
    return _current.get() or SYSTEM


@contextlib.contextmanager
def _set(**changes):
    token = _current.set(dataclasses.replace(current(), **changes))
    try:
        yield
    finally:
        _current.reset(token)


def door(name, *, detail="", user=None, request=None):
    """Entries written inside come through door `name`; their actor is `user`, or the request's user (read when
    the entry is written: DRF authenticates a token or basic-auth user after the middleware ran)."""
    return _set(door=name, detail=detail[:200], user=user, request=request, operation="")


def operation(name):
    return _set(operation=name)


def register(model, **options):
    """Audit every change of `model` (django-auditlog's options: exclude_fields, m2m_fields, mask_fields, ...)."""
    auditlog.register(model, **options)


def _actor(context):
    if context.user is not None:
        return context.user
    user = getattr(context.request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _stamp(sender, instance, **kwargs):
    if instance.pk is not None:
        return
    context = current()
    instance.door = context.door
    instance.door_detail = instance.door_detail or context.detail
    instance.operation = instance.operation or context.operation
    if instance.actor_id is None:
        actor = _actor(context)
        if actor is not None:
            instance.actor = actor
            instance.actor_email = getattr(actor, "email", "") or None
    if instance.remote_addr is None and context.request is not None:
        instance.remote_addr = context.request.META.get("REMOTE_ADDR") or None


def connect():
    pre_save.connect(_stamp, sender=AuditEntry, dispatch_uid="access_audit_stamp")


def _target(instance=None, model=None, label=""):
    if instance is not None:
        return {
            "content_type": ContentType.objects.get_for_model(instance),
            "object_pk": str(instance.pk),
            "object_id": instance.pk if isinstance(instance.pk, int) else None,
            "object_repr": str(instance)[:500],
        }
    return {
        "content_type": ContentType.objects.get_for_model(model),
        "object_pk": "",
        "object_id": None,
        "object_repr": label,
    }


def operator_action(*, name, instance=None, model=None, label="", user=None, details=None):
    """Record operator action `name` on `instance` (or on `model` as a whole: e.g. a sync of every template).
    Not recorded for the system's own passes (no door). Returns the entry or None."""
    context = current()
    if context.door == Door.SYSTEM and user is None:
        return None
    return AuditEntry.objects.create(
        **_target(instance, model, label),
        action=Action.OPERATION,
        operation=name,
        changes=None,
        additional_data=details or None,
        actor=user if user is not None and user.is_authenticated else None,
    )


def change_record(*, instance, changes, user=None, name=""):
    """Record a change written without model signals (a conditional UPDATE): `changes` {field: [before, after]}."""
    return AuditEntry.objects.create(
        **_target(instance),
        action=Action.UPDATE,
        operation=name,
        changes={field: [_text(before), _text(after)] for field, (before, after) in changes.items()},
        actor=user if user is not None and user.is_authenticated else None,
    )


def change_records(*, items):
    """`change_record` for many objects in one INSERT: items [(instance, {field: (before, after)})]."""
    entries = [
        AuditEntry(
            **_target(instance),
            action=Action.UPDATE,
            changes={field: [_text(before), _text(after)] for field, (before, after) in changes.items()},
        )
        for instance, changes in items
    ]
    for entry in entries:
        _stamp(AuditEntry, entry)  # bulk_create sends no pre_save
    AuditEntry.objects.bulk_create(entries, batch_size=500)


def _text(value):
    return "None" if value is None else str(value)


def entries_prune(*, days=None, now=None):
    """Delete the entries older than the retention (AUDIT_RETENTION_DAYS; 0 keeps everything). Returns the count."""
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    with transaction.atomic():
        count, _per_model = AuditEntry.objects.filter(timestamp__lt=cutoff).delete()
    logger.info("audit trail: %d entries older than %d days deleted", count, days)
    return count
