"""Every write of the fleet: instance state changes (through one function and one table), with their history."""

import ipaddress

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from autoscaling import ipam
from autoscaling.services import config_update, provisioning_request_on_commit
from fleet.models import InstanceChange, ManagedInstance

State = ManagedInstance.State
Health = ManagedInstance.Health

# --- the lifecycle (the only place that says which changes are possible) --------------------------------------
INSTANCE_TRANSITIONS = {
    State.PENDING: {State.PROVISIONING, State.IN_SERVICE, State.FAILED, State.LOST, State.REMOVED},
    State.PROVISIONING: {State.IN_SERVICE, State.FAILED, State.LOST, State.REMOVING, State.REMOVED},
    State.IN_SERVICE: {State.DRAINING, State.REMOVING, State.FAILED, State.LOST},
    State.DRAINING: {State.IN_SERVICE, State.REMOVING, State.FAILED, State.LOST},
    # Back in service: a scale-in that failed before the VM was destroyed undid its F5 changes.
    State.REMOVING: {State.IN_SERVICE, State.REMOVED, State.FAILED, State.LOST},
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
        if (current in ManagedInstance.LIVE_STATES) != (new in ManagedInstance.LIVE_STATES):
            _targets_changed(f"instance {instance_id} {current} -> {new}")
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


def instances_facts_record(*, instances, fields):
    """Write what the reconcile saw of each instance (`fields` of each, e.g. power_state, vcenter_uuid): never a
    state or a health, so no history."""
    if instances:
        with transaction.atomic():
            _update_each(instances, fields)


def instances_health_set(*, changes, actor=""):
    """`instance_health_set` for many instances at once (the reconcile's): one locked read, one batch of UPDATEs and
    one INSERT of history lines, whatever their number. `changes`: [(instance_id, health, reason)]. Facts are not
    written here. Returns the ids whose health changed."""
    wanted = {instance_id: (health, reason) for instance_id, health, reason in changes}
    if not wanted:
        return []
    now = timezone.now()
    with transaction.atomic():
        rows = ManagedInstance.objects.select_for_update().filter(pk__in=list(wanted)).only("pk", "health")
        changed = [row for row in rows if row.health != wanted[row.pk][0]]
        for row in changed:
            row.health, reason = wanted[row.pk]
            row.health_reason = reason[:500]
            row.unhealthy_since = now if row.health == Health.UNHEALTHY else None
            row.updated_at = now
        _update_each(changed, ["health", "health_reason", "unhealthy_since", "updated_at"])
        InstanceChange.objects.bulk_create(
            [
                InstanceChange(instance_id=row.pk, health=row.health, reason=wanted[row.pk][1], actor=actor[:100])
                for row in changed
            ],
            batch_size=500,
        )
    return [row.pk for row in changed]


def _update_each(instances, fields):
    """UPDATE each instance's `fields` with its own values, in one executemany. (Django's bulk_update builds a CASE
    expression per row and field: ~2 ms of Python per row, 4 s for the reconcile's first pass over 1,000.)"""
    if not instances:
        return
    meta = ManagedInstance._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"
    params = [
        [column.get_db_prep_save(getattr(instance, column.attname), connection) for column in columns] + [instance.pk]
        for instance in instances
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


# --- the instances a scale-out creates (the pipeline's callbacks) ---------------------------------------------
class InstanceRefused(Exception):
    """The pipeline asked for something its event cannot do with its instances; `code` names why (for a 409)."""

    def __init__(self, message, *, code):
        super().__init__(message)
        self.message = message
        self.code = code


# What the pipeline itself may report of an instance it creates; failing and removing follow its step reports.
PIPELINE_STATES = (State.PROVISIONING, State.IN_SERVICE)
PIPELINE_FACTS = ("vm_name", "vcenter_uuid", "f5_member")
# What a scale-in reports of the instances it removes: draining at the F5 disable, removing after the drain, removed
# at the end; back in service after an undo, failed (with what is left) when it failed after destroying the VM.
SCALE_IN_STATES = (State.DRAINING, State.REMOVING, State.REMOVED, State.IN_SERVICE, State.FAILED)
SCALE_IN_FACTS = ("leftover",)


def _pipeline_actor(event_id):
    return f"pipeline (event #{event_id})"


def instance_record(*, event, allocation):
    """The instance a scale-out is about to clone for the address `allocation` holds, recorded before the clone.

    Idempotent: asking again for the same event and address (a retried step) returns the same instance. Returns
    (instance, created). Refused when the event already recorded as many instances as it creates VMs.
    """
    with transaction.atomic():
        # One event's records are serialized: the count below and the insert agree.
        type(event).objects.select_for_update().filter(pk=event.pk).first()
        existing = ManagedInstance.objects.filter(created_by_event=event, ip_address=allocation.address).first()
        if existing is not None:
            return existing, False
        recorded = ManagedInstance.objects.filter(created_by_event=event).count()
        if recorded >= event.vm_count:
            raise InstanceRefused(
                _("Event #%(event)d creates %(count)d VM(s) and has recorded them all already.")
                % {"event": event.pk, "count": event.vm_count},
                code="instance_limit",
            )
        config = event.config
        instance = ManagedInstance.objects.create(
            config=config,
            origin=ManagedInstance.Origin.CREATED,
            state=State.PENDING,
            ip_address=allocation.address,
            ip_allocation=allocation,
            template_id=config.template_id,
            created_by_event=event,
        )
        InstanceChange.objects.create(
            instance=instance,
            to_state=State.PENDING,
            reason=_("Recorded by the pipeline before the clone, with address %(address)s.")
            % {"address": allocation.address},
            actor=_pipeline_actor(event.pk),
        )
        _targets_changed(f"instance {instance.pk} of {config.service_name} recorded")
    return instance, True


def _scale_in(event):
    return event.action == type(event).Action.SCALE_IN


def event_instances(*, event):
    """The instances an event works on: those it creates (a scale-out), or those it removes (a scale-in)."""
    if _scale_in(event):
        return ManagedInstance.objects.filter(removed_by_event=event).order_by("pk")
    return ManagedInstance.objects.filter(created_by_event=event).order_by("pk")


def instance_report(*, event, instance_id, reason, state=None, **facts):
    """The pipeline reports what it knows of one of its event's instances (`facts`: vm_name, vcenter_uuid,
    f5_member) and, with `state`, that it moved on (provisioning after the clone, in service once its F5 member is
    up). Reporting the state it already has writes the facts only, so a retried step changes nothing more.

    A scale-in reports the instances it removes (SCALE_IN_STATES, and `leftover`: what a failure after the VM was
    destroyed left behind)."""
    states, allowed_facts = (SCALE_IN_STATES, SCALE_IN_FACTS) if _scale_in(event) else (PIPELINE_STATES, PIPELINE_FACTS)
    unknown = set(facts) - set(allowed_facts)
    if unknown or (state is not None and state not in states):
        raise ValueError(f"instance_report: state {state!r}, facts {sorted(unknown)}")
    instance = event_instances(event=event).filter(pk=instance_id).first()
    if instance is None:
        raise InstanceRefused(
            _("Instance #%(instance)s is not one event #%(event)d works on.")
            % {"instance": instance_id, "event": event.pk},
            code="not_found",
        )
    facts = {name: value for name, value in facts.items() if value is not None}
    if state == State.IN_SERVICE and instance.in_service_at is not None:
        facts["in_service_at"] = instance.in_service_at  # back in service: not a new VM warming up
    if state is None or state == instance.state:
        if facts:
            ManagedInstance.objects.filter(pk=instance.pk).update(updated_at=timezone.now(), **facts)
            instance.refresh_from_db()
        return instance
    moved = instance_transition(
        instance_id=instance.pk, new=state, reason=reason, actor=_pipeline_actor(event.pk), **facts
    )
    if moved is None:
        instance.refresh_from_db()
        raise InstanceRefused(
            _("Instance #%(instance)d is %(current)s; it cannot become %(new)s.")
            % {"instance": instance.pk, "current": instance.get_state_display(), "new": State(state).label},
            code="conflict",
        )
    return moved


def event_instances_ip_release(*, event, address=None):
    """A scale-in gives back the addresses of the instances it removes (one, or all): exactly those, nothing else.
    Returns the released addresses; InstanceRefused(code="not_removed") for an address that is not one of them."""
    instances = list(event_instances(event=event).select_related("ip_allocation__pool", "ip_allocation__event"))
    if address is not None:
        instances = [instance for instance in instances if instance.ip_address == address]
        if not instances:
            raise InstanceRefused(
                _("%(address)s is not the address of an instance event #%(event)d removes.")
                % {"address": address, "event": event.pk},
                code="not_removed",
            )
    released = []
    with transaction.atomic():
        for instance in instances:
            allocation = instance.ip_allocation
            shared = ManagedInstance.objects.filter(ip_allocation=allocation, state__in=ManagedInstance.LIVE_STATES)
            if allocation is None or shared.exclude(pk=instance.pk).exists():
                continue  # no address, or the row was handed to another instance since: not this one's to release
            for row in ipam.ip_release(pool=allocation.pool, event=allocation.event, address=allocation.address):
                released.append(row.address)
                instance_note(
                    instance_id=instance.pk,
                    reason=_("IP address %(address)s released to pool %(pool)s.")
                    % {"address": row.address, "pool": allocation.pool.name},
                    actor=_pipeline_actor(event.pk),
                )
    return released


def event_instances_fail(*, event_id, reason):
    """The scale-out failed (a step failed, the build ended, the sweep gave up): its instances still being created
    failed with it. Returns how many changed."""
    ids = ManagedInstance.objects.filter(created_by_event_id=event_id, state__in=ManagedInstance.CREATING_STATES)
    changed = 0
    for instance_id in list(ids.values_list("pk", flat=True)):
        changed += bool(
            instance_transition(
                instance_id=instance_id, new=State.FAILED, reason=reason, actor=_pipeline_actor(event_id)
            )
        )
    return changed


def event_instances_remove(*, event_id, reason):
    """The pipeline's undo destroyed the event's VMs (or found none to destroy): its failed instances are removed."""
    ids = ManagedInstance.objects.filter(created_by_event_id=event_id, state=State.FAILED)
    changed = 0
    for instance_id in list(ids.values_list("pk", flat=True)):
        changed += bool(
            instance_transition(
                instance_id=instance_id, new=State.REMOVED, reason=reason, actor=_pipeline_actor(event_id)
            )
        )
    return changed


def _targets_changed(why):
    """A service's scrape targets are its live instances: ask provisioning to render them again (on commit)."""
    provisioning_request_on_commit(reason=why)


# --- operators' actions ----------------------------------------------------------------------------------------
def instance_protect(*, instance_id, protected, user=None):
    """Protect an instance from scale-in (or lift it); recorded in its history. Returns whether it changed."""
    changed = ManagedInstance.objects.filter(pk=instance_id).exclude(protected_from_scale_in=protected)
    if not changed.update(protected_from_scale_in=protected, updated_at=timezone.now()):
        return False
    reason = _("Protected from scale-in.") if protected else _("No longer protected from scale-in.")
    instance_note(instance_id=instance_id, reason=str(reason), actor=_user_actor(user), user=user)
    return True


def _user_actor(user):
    return f"user {user.get_username()}" if user is not None else ""


# --- adoption: the service's existing VMs ---------------------------------------------------------------------
def _target_host(target):
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return None


def config_saved_receive(sender, *, config, user=None, **kwargs):
    """autoscaling.hooks.config_saved: a config was saved (in the current transaction)."""
    config_monitored_instances_sync(config=config, user=user)


def config_monitored_instances_sync(*, config, user=None):
    """The config's monitored instances ("host:port" node exporter targets) are its adopted instances: adopt each
    new one (in service, protected from scale-in) and remove the adopted ones no longer listed. Called by the
    config services on every save; returns (adopted, removed) counts."""
    targets = list(dict.fromkeys(config.monitored_instances or []))
    actor = _user_actor(user) or f"config {config.service_name}"
    with transaction.atomic():
        live = {
            instance.monitor_target: instance
            for instance in ManagedInstance.objects.select_for_update().filter(
                config=config, origin=ManagedInstance.Origin.ADOPTED, state__in=ManagedInstance.LIVE_STATES
            )
        }
        adopted = 0
        for target in targets:
            if target in live:
                continue
            instance = ManagedInstance.objects.create(
                config=config,
                origin=ManagedInstance.Origin.ADOPTED,
                state=State.IN_SERVICE,
                in_service_at=timezone.now(),
                ip_address=_target_host(target),
                monitor_target=target,
                protected_from_scale_in=True,
            )
            InstanceChange.objects.create(
                instance=instance,
                to_state=State.IN_SERVICE,
                reason=_("Adopted from the config's monitored instances (%(target)s).") % {"target": target},
                actor=actor,
                user=user,
            )
            adopted += 1
        removed = 0
        for target, instance in live.items():
            if target in targets:
                continue
            reason = _("%(target)s is no longer one of the config's monitored instances.") % {"target": target}
            if instance.state != State.REMOVING:
                instance_transition(instance_id=instance.pk, new=State.REMOVING, reason=reason, actor=actor, user=user)
            removed += bool(
                instance_transition(instance_id=instance.pk, new=State.REMOVED, reason=reason, actor=actor, user=user)
            )
        if adopted:
            _targets_changed(f"{config.service_name}: {adopted} instance(s) adopted")
    return adopted, removed


def instance_adopt_vm(*, config, vm, port=9100, user=None):
    """Adopt a VM picked from vCenter's list (a VirtualMachineInfo) into the config's fleet: its address on the
    node exporter `port` joins the config's monitored instances (so it is scraped and adopted as those are), and
    the instance gets the VM's name, vCenter instance UUID and power state. Returns the instance; ValidationError
    when the VM reports no address or is already in an inventory."""
    if not vm.ip_address:
        raise ValidationError(
            _("VM %(vm)s reports no IP address (is VMware Tools running?); it cannot be scraped.") % {"vm": vm.name}
        )
    live = ManagedInstance.objects.filter(state__in=ManagedInstance.LIVE_STATES)
    taken = live.filter(vcenter_uuid=vm.instance_uuid).select_related("config").first() if vm.instance_uuid else None
    if taken is not None:
        raise ValidationError(
            _("VM %(vm)s is already instance #%(instance)d of %(service)s.")
            % {"vm": vm.name, "instance": taken.pk, "service": taken.config.service_name}
        )
    target = f"{vm.ip_address}:{int(port)}"
    with transaction.atomic():
        if target not in (config.monitored_instances or []):
            data = {"monitored_instances": [*(config.monitored_instances or []), target]}
            config_update(config=config, data=data, user=user)
        else:
            config_monitored_instances_sync(config=config, user=user)
        instance = live.get(config=config, origin=ManagedInstance.Origin.ADOPTED, monitor_target=target)
        ManagedInstance.objects.filter(pk=instance.pk).update(
            vm_name=vm.name[:80],
            vcenter_uuid=vm.instance_uuid,
            power_state=vm.power_state,
            last_seen_at=timezone.now(),
            updated_at=timezone.now(),
        )
        instance_note(
            instance_id=instance.pk,
            reason=_("Picked from vCenter's VM list: %(vm)s (%(uuid)s).") % {"vm": vm.name, "uuid": vm.instance_uuid},
            actor=_user_actor(user),
            user=user,
        )
    instance.refresh_from_db()
    return instance
