"""Every write of the fleet: instance state changes (through one function and one table), with their history."""

from django.db import transaction
from django.utils import timezone

from fleet.models import InstanceChange, ManagedInstance

State = ManagedInstance.State
Health = ManagedInstance.Health

# --- the lifecycle (the only place that says which changes are possible) --------------------------------------
INSTANCE_TRANSITIONS = {
    State.PENDING: {State.PROVISIONING, State.IN_SERVICE, State.FAILED, State.LOST, State.REMOVED},
    State.PROVISIONING: {State.IN_SERVICE, State.FAILED, State.LOST, State.REMOVING, State.REMOVED},
    State.IN_SERVICE: {State.DRAINING, State.REMOVING, State.FAILED, State.LOST},
    State.DRAINING: {State.IN_SERVICE, State.REMOVING, State.FAILED, State.LOST},
    State.REMOVING: {State.REMOVED, State.FAILED, State.LOST},
    State.FAILED: {State.REMOVING, State.REMOVED, State.LOST},
    State.LOST: {State.REMOVED},
    State.REMOVED: set(),
}


class InstanceTransitionRefused(Exception):
    """The instance cannot go from its state to the one asked for; the message says both."""


def _before(new):
    return {current for current, allowed in INSTANCE_TRANSITIONS.items() if new in allowed}


def instance_transition(*, instance_id, new, reason, actor="", user=None, **fields):
    """Move an instance to state `new` (writing `fields` with it) when the table allows it from the state it has at
    that moment, and record the change with its reason. Returns the updated instance, or None when refused.

    One conditional UPDATE: two writers racing (the pipeline's callback, the reconcile) can never move an
    instance out of `removed` or skip the table.
    """
    now = timezone.now()
    if new == State.IN_SERVICE:
        fields.setdefault("in_service_at", now)
    if new in ManagedInstance.FINAL_STATES:
        fields.setdefault("removed_at", now)
    allowed = _before(new)
    with transaction.atomic():
        # Conditional on the exact state read, so the history names the state really left; a writer that moved the
        # instance in between makes this one read again.
        for _attempt in range(3):
            current = ManagedInstance.objects.filter(pk=instance_id).values_list("state", flat=True).first()
            if current not in allowed:
                return None
            rows = ManagedInstance.objects.filter(pk=instance_id, state=current)
            if rows.update(state=new, updated_at=now, **fields):
                break
        else:
            return None
        InstanceChange.objects.create(
            instance_id=instance_id, from_state=current, to_state=new, reason=reason, actor=actor[:100], user=user
        )
    return ManagedInstance.objects.get(pk=instance_id)


def instance_health_set(*, instance_id, health, reason, actor="", **facts):
    """Record what vCenter and F5 say of an instance (`facts`: power_state, guest_heartbeat, f5_state, ...); a
    change of health is written to its history with the reason. Returns whether the health changed."""
    with transaction.atomic():
        instance = ManagedInstance.objects.select_for_update().get(pk=instance_id)
        changed = instance.health != health
        for name, value in facts.items():
            setattr(instance, name, value)
        if changed:
            instance.health = health
            instance.health_reason = reason[:500]
            instance.unhealthy_since = timezone.now() if health == Health.UNHEALTHY else None
            InstanceChange.objects.create(instance=instance, health=health, reason=reason, actor=actor[:100])
        instance.save()
    return changed


def instance_note(*, instance_id, reason, actor="", user=None):
    """An operator's or the system's action on an instance that is not a state change (protect, unprotect, ...)."""
    return InstanceChange.objects.create(instance_id=instance_id, reason=reason, actor=actor[:100], user=user)
