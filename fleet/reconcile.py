"""The fleet's reconcile: the inventory compared with vCenter (one property-collector pass for every VM) and with
F5 (one read of each managed pool's members), and the inventory brought in line.

- A live instance is matched to its VM by the ownership marker (the custom attribute holding its id), else by its
  vCenter instance UUID, else by its VM name, else (adopted instances only) by its guest IP. A VM is matched once.
- An instance whose VM is gone becomes `lost`: its IP allocation is released, its F5 member removed and a
  provisioning pass requested (its address leaves the scrape targets). Pending, provisioning and removing
  instances are given FLEET_LOST_GRACE seconds after their last state change (a clone or a removal in progress).
- An instance in service (or draining) whose VM is powered off or reports a red heartbeat, or (in service) whose
  F5 member is down or missing, becomes unhealthy once that has lasted FLEET_UNHEALTHY_GRACE seconds, and healthy
  again when every check passes.
- An adopted instance never found in vCenter (a monitored instance the portal knows only as a scrape target) is
  left as it is: not being matched says nothing about its VM.
- vCenter failing changes nothing at all (an outage must not mark the fleet lost); a pool that cannot be read
  leaves the instances of its services as they are. Every pass is recorded as a ReconcileRun with its changes and
  errors; every change of an instance is in its history with the reason.

Nothing is ever destroyed in vCenter here: a VM nobody claims is the orphan sweep's business.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from access import audit
from autoscaling import ipam
from autoscaling.models import AutoscalingConfig
from autoscaling.services import provisioning_request_on_commit
from common.clients import f5_client, vcenter_client
from common.messages import Joined, Message
from fleet.models import InstanceChange, ManagedInstance, ReconcileRun
from fleet.services import instance_note, instance_transition, instances_facts_record, instances_health_set
from integrations.errors import IntegrationError
from integrations.f5 import member_name
from integrations.vcenter import OWNERSHIP_FIELD, POWERED_ON

logger = logging.getLogger(__name__)

State = ManagedInstance.State
Health = ManagedInstance.Health
ACTOR = "reconcile"
RUNS_KEPT = 500
CHANGES_KEPT = 200  # lines of a run's record (the instances' histories have every change)
# In flight: the pipeline is creating or removing the VM, so it may be missing for a while.
IN_FLIGHT_STATES = (State.PENDING, State.PROVISIONING, State.REMOVING)
# Judged on their VM's power and heartbeat; in service also on their F5 member.
JUDGED_STATES = (State.IN_SERVICE, State.DRAINING)
FACT_FIELDS = ["vcenter_uuid", "power_state", "guest_heartbeat", "f5_state", "trouble_since"]


class UnknownService(Exception):
    """The reconcile was asked for a service that has no config."""


@dataclass
class ReconcileResult:
    run_id: int | None = None
    ok: bool = True
    errors: list[str] = field(default_factory=list)
    instances: int = 0
    vms: int = 0
    lost: int = 0
    unhealthy: int = 0
    healthy: int = 0
    changes: list[str] = field(default_factory=list)
    vcenter_requests: int = 0  # RetrievePropertiesEx calls
    f5_requests: int = 0  # member reads (one per pool)
    seconds: float = 0.0


@dataclass
class _Pool:
    partition: str
    name: str
    members: list | None = None  # MemberState; None: could not be read
    error: str = ""

    @property
    def full_path(self):
        return f"/{self.partition}/{self.name}"

    def find(self, address, port, name=""):
        for member in self.members or ():
            if (name and member.name == name) or (member.address == address and member.port == port):
                return member
        return None


def fleet_reconcile(*, service=None, config_ids=None, actor=ACTOR, user=None):
    """One pass over the given configs' instances (all configs by default; `service` names one, UnknownService
    when it has no config). Returns a ReconcileResult; the pass is also recorded as a ReconcileRun."""
    started = timezone.now()
    clock = time.perf_counter()
    configs = AutoscalingConfig.objects.all()
    if service is not None:
        configs = configs.filter(service_name=service)
        if not configs.exists():
            message = _("There is no autoscaling config for the service %(service)s.") % {"service": service}
            raise UnknownService(message)
    if config_ids is not None:
        configs = configs.filter(pk__in=list(config_ids))
    scope = ", ".join(configs.order_by("service_name").values_list("service_name", flat=True)[:5])
    if service is None and config_ids is None:
        scope = ""
    actor = f"user {user}" if user is not None else actor
    result = ReconcileResult()
    try:
        _reconcile(configs, result, actor=actor)
    except Exception as exc:
        result.ok = False
        result.errors.append(f"{exc.__class__.__name__}: {exc}")
        raise
    finally:
        result.seconds = time.perf_counter() - clock
        result.run_id = _record(result, started=started, scope=scope, actor=actor, user=user)
    return result


def _reconcile(configs, result, *, actor):
    now = timezone.now()
    last_change = InstanceChange.objects.filter(instance=OuterRef("pk")).exclude(to_state="").order_by("-at", "-pk")
    live = list(
        ManagedInstance.objects.filter(config__in=configs, state__in=ManagedInstance.LIVE_STATES)
        .select_related("config", "ip_allocation")
        .annotate(last_state_change=Subquery(last_change.values("at")[:1]))
        .order_by("pk")
    )
    lost_before = list(
        ManagedInstance.objects.filter(config__in=configs, state=State.LOST)
        .exclude(config__f5_pool="")
        .select_related("config")
    )
    result.instances = len(live)

    # vCenter first: when it fails, nothing changes.
    try:
        with vcenter_client() as vcenter:
            try:
                vms = [vm for vm in vcenter.list_vm_facts(owner_field=OWNERSHIP_FIELD) if not vm.is_template]
            finally:
                result.vcenter_requests = vcenter.calls["RetrievePropertiesEx"]
    except IntegrationError as exc:
        result.ok = False
        result.errors.append(_("vCenter: %(error)s Nothing was changed.") % {"error": exc.message})
        logger.warning("fleet reconcile: %s", exc.message)
        return
    result.vms = len(vms)

    pools = {}
    for instance in [*live, *lost_before]:
        config = instance.config
        if config.f5_pool:
            pools.setdefault(_pool_key(config), _Pool(config.f5_partition, config.f5_pool))
    f5 = None
    try:
        if pools:
            f5 = f5_client()
            for pool in pools.values():
                result.f5_requests += 1
                try:
                    pool.members = f5.list_members(pool.name, pool.partition)
                except IntegrationError as exc:
                    pool.error = exc.message
                    result.errors.append(
                        _("F5 pool %(pool)s: %(error)s Its services' instances were left as they are.")
                        % {"pool": pool.full_path, "error": exc.message}
                    )
                    if exc.code in ("unreachable", "timeout", "unauthorized"):
                        break  # every other pool would answer the same: do not wait for each
        for remaining in pools.values():
            if remaining.members is None and not remaining.error:
                remaining.error = _("not read (F5 failed for another pool)")
                result.errors.append(
                    _("F5 pool %(pool)s: %(error)s Its services' instances were left as they are.")
                    % {"pool": remaining.full_path, "error": remaining.error}
                )

        def pool_of(config):
            return pools.get(_pool_key(config)) if config.f5_pool else None

        workable = [i for i in live if not (pool_of(i.config) and pool_of(i.config).error)]
        matches, unresolved = _match(workable, vms)
        for instance in workable:
            if instance.pk in unresolved:
                result.errors.append(f"{instance.config.service_name} {instance}: {unresolved[instance.pk]}")

        seen_ids, fact_rows, health_changes, gone = [], [], [], []
        for instance in workable:
            vm = matches.get(instance.pk)
            if vm is None:
                if instance.pk in unresolved or _never_seen_adopted(instance):
                    continue
                since = instance.last_state_change or instance.created_at
                if instance.state in IN_FLIGHT_STATES and now - since < timedelta(seconds=settings.FLEET_LOST_GRACE):
                    continue
                gone.append(instance)
                continue
            seen_ids.append(instance.pk)
            judgement = _judge(instance, vm, pool_of(instance.config), now)
            if judgement.facts_changed:
                fact_rows.append(instance)
            if judgement.health is not None:
                health_changes.append((instance, judgement))

        with transaction.atomic():
            if seen_ids:
                ManagedInstance.objects.filter(pk__in=seen_ids).update(last_seen_at=now)
            instances_facts_record(instances=fact_rows, fields=FACT_FIELDS)
        changed = set(
            instances_health_set(
                changes=[(instance.pk, judgement.health, judgement.reason) for instance, judgement in health_changes],
                actor=actor,
            )
        )
        for instance, judgement in health_changes:
            if instance.pk not in changed:
                continue
            if judgement.health == Health.UNHEALTHY:
                result.unhealthy += 1
            else:
                result.healthy += 1
            result.changes.append(f"{instance.config.service_name} {instance}: {judgement.health}: {judgement.reason}")

        gone_ids = {instance.pk for instance in gone}
        staying = [instance for instance in live if instance.pk not in gone_ids]
        live_allocations = {instance.ip_allocation_id for instance in staying if instance.ip_allocation_id}
        newly_lost = []
        for instance in gone:
            if _lose(instance, actor=actor, live_allocations=live_allocations, result=result):
                newly_lost.append(instance)
        if newly_lost:
            provisioning_request_on_commit(
                reason=f"fleet reconcile: {len(newly_lost)} instance(s) lost, scrape targets re-rendered"
            )

        # The members of lost instances leave their pool (now, or on a later pass when F5 failed before), unless
        # a live instance has the same member (its address was handed out again).
        claimed = {(_pool_key(instance.config), *_member_of(instance)[:2]) for instance in staying}
        for instance in [*newly_lost, *lost_before]:
            pool = pool_of(instance.config)
            address, port, name = _member_of(instance)
            if pool is None or pool.error or not address or (_pool_key(instance.config), address, port) in claimed:
                continue
            member = pool.find(address, port, name)
            if member is None:
                continue
            node = member.name.rsplit("." if ":" in member.address else ":", 1)[0]
            try:
                f5.remove_member(
                    pool.name,
                    pool.partition,
                    member.address,
                    member.port,
                    node_name=node if node != member.address else None,
                    delete_node=True,
                )
            except IntegrationError as exc:
                result.errors.append(
                    _("%(instance)s: its F5 member %(member)s could not be removed from %(pool)s: %(error)s")
                    % {"instance": instance, "member": member.name, "pool": pool.full_path, "error": exc.message}
                )
                continue
            reason = Message(
                gettext_noop("F5 member %(member)s removed from pool %(pool)s (the instance is lost)."),
                {"member": member.name, "pool": pool.full_path},
            )
            instance_note(instance_id=instance.pk, reason=reason, actor=actor)
            result.changes.append(f"{instance.config.service_name} {instance}: {reason}")
    finally:
        if f5 is not None:
            f5.close()
    result.ok = result.ok and not result.errors


@dataclass
class _Judgement:
    facts_changed: bool = False
    health: str | None = None  # the new health, None: unchanged
    reason: object = ""  # a Message (common/messages.py)


def _judge(instance, vm, pool, now):
    """Record the VM's facts on the instance (in memory) and say whether its health changes, and why."""
    facts = {"power_state": vm.power_state, "guest_heartbeat": vm.guest_heartbeat}
    if not instance.vcenter_uuid and vm.instance_uuid:
        facts["vcenter_uuid"] = vm.instance_uuid
    troubles = []
    if instance.state in JUDGED_STATES:
        if vm.power_state != POWERED_ON:
            troubles.append(Message(gettext_noop("VM %(vm)s is %(power)s"), {"vm": vm.name, "power": vm.power_state}))
        if vm.guest_heartbeat == "red":
            troubles.append(Message(gettext_noop("the guest heartbeat of VM %(vm)s is red"), {"vm": vm.name}))
    address, port, name = _member_of(instance)
    if pool is not None and address:  # an instance of no known address cannot be looked up in its pool
        member = pool.find(address, port, name)
        facts["f5_state"] = (
            (member.state + ("" if member.session != "user-disabled" else " (disabled)")) if member else ""
        )
        if instance.state == State.IN_SERVICE:
            if member is None:
                troubles.append(
                    Message(
                        gettext_noop("%(member)s is not a member of F5 pool %(pool)s"),
                        {"member": name, "pool": pool.full_path},
                    )
                )
            elif not member.up:
                troubles.append(
                    Message(
                        gettext_noop("its F5 member %(member)s is %(state)s (session %(session)s)"),
                        {"member": member.name, "state": member.state, "session": member.session},
                    )
                )
    if troubles:
        facts["trouble_since"] = instance.trouble_since or now
    else:
        facts["trouble_since"] = None
    changed = any(getattr(instance, key) != value for key, value in facts.items())
    for key, value in facts.items():
        setattr(instance, key, value)
    judgement = _Judgement(facts_changed=changed)
    if troubles:
        lasted = now - instance.trouble_since
        if instance.health != Health.UNHEALTHY and lasted >= timedelta(seconds=settings.FLEET_UNHEALTHY_GRACE):
            judgement.health = Health.UNHEALTHY
            judgement.reason = Message(
                gettext_noop("%(troubles)s, for %(seconds)d s."),
                {"troubles": Joined(tuple(troubles)), "seconds": lasted.total_seconds()},
            )
    elif instance.state in JUDGED_STATES and instance.health != Health.HEALTHY:
        checks = [
            Message(gettext_noop("VM %(vm)s powered on"), {"vm": vm.name}),
            Message(gettext_noop("heartbeat %(color)s"), {"color": vm.guest_heartbeat}),
        ]
        if pool is not None and address and instance.state == State.IN_SERVICE:
            checks.append(Message(gettext_noop("F5 member up")))
        judgement.health = Health.HEALTHY
        judgement.reason = Message(
            gettext_noop("Recovered: %(checks)s.")
            if instance.health == Health.UNHEALTHY
            else gettext_noop("Healthy: %(checks)s."),
            {"checks": Joined(tuple(checks), ", ")},
        )
    return judgement


def _never_seen_adopted(instance):
    """An adopted instance (a scrape target the config listed) that was never found in vCenter: the portal does not
    know its VM, so it cannot tell that it is gone; it is left as it is, never declared lost or cleaned up."""
    return (
        instance.origin == ManagedInstance.Origin.ADOPTED
        and not instance.vcenter_uuid
        and instance.last_seen_at is None
    )


def _lose(instance, *, actor, live_allocations, result):
    """Mark the instance lost and release its IP, in one transaction; False when its state changed meanwhile."""
    seen = (
        Message(
            gettext_noop("last seen %(at)s"),
            {"at": timezone.localtime(instance.last_seen_at).strftime("%Y-%m-%d %H:%M:%S")},
        )
        if instance.last_seen_at
        else Message(gettext_noop("never seen by the reconcile"))
    )
    reason = Message(
        gettext_noop("VM %(vm)s is no longer in vCenter (%(seen)s)."),
        {"vm": instance.vm_name or instance.vcenter_uuid or instance.ip_address or f"#{instance.pk}", "seen": seen},
    )
    with transaction.atomic():
        if instance_transition(instance_id=instance.pk, new=State.LOST, reason=reason, actor=actor) is None:
            return False
        result.lost += 1
        result.changes.append(f"{instance.config.service_name} {instance}: {State.LOST}: {reason}")
        allocation = instance.ip_allocation
        if allocation is not None and _allocation_is_its_own(instance, allocation, live_allocations):
            released = ipam.ip_release(pool=allocation.pool, event=allocation.event, address=allocation.address)
            if released:
                note = Message(
                    gettext_noop("IP address %(address)s released to pool %(pool)s."),
                    {"address": allocation.address, "pool": allocation.pool.name},
                )
                instance_note(instance_id=instance.pk, reason=note, actor=actor)
                result.changes.append(f"{instance.config.service_name} {instance}: {note}")
    return True


def _allocation_is_its_own(instance, allocation, live_allocations):
    """The allocation still holds this instance's address: not handed to another live instance or event since."""
    if allocation.pk in live_allocations:
        return False
    if instance.ip_address and allocation.address != instance.ip_address:
        return False
    return instance.created_by_event_id is None or allocation.event_id == instance.created_by_event_id


def _pool_key(config):
    return (config.f5_partition, config.f5_pool)


def _member_of(instance):
    """(address, port, member name) of the instance in its config's pool: its recorded member, else its IP."""
    if instance.f5_member:
        name = instance.f5_member
        separator = "." if name.count(":") > 1 else ":"
        address, _sep, port = name.rpartition(separator)
        if port.isdigit():
            return address, int(port), name
    if instance.ip_address:
        port = instance.config.f5_member_port
        return instance.ip_address, port, member_name(instance.ip_address, port)
    return "", 0, ""


def _match(instances, vms):
    """{instance id: VmFacts} and {instance id: why it could not be matched} (ambiguous names or addresses)."""
    matches, unresolved, claimed = {}, {}, set()
    by_owner, by_uuid, by_name, by_ip = {}, {}, {}, {}
    for vm in vms:
        if vm.owner:
            by_owner.setdefault(vm.owner, []).append(vm)
        if vm.instance_uuid:
            by_uuid.setdefault(vm.instance_uuid, []).append(vm)
        by_name.setdefault(vm.name, []).append(vm)
        if vm.ip_address:
            by_ip.setdefault(vm.ip_address, []).append(vm)
    owners = {str(instance.pk) for instance in instances}

    def free(vm, instance):
        # Not matched yet, and not marked as another instance's VM.
        return vm.moid not in claimed and (not vm.owner or vm.owner == str(instance.pk) or vm.owner not in owners)

    def take(instance, vm):
        matches[instance.pk] = vm
        claimed.add(vm.moid)

    # By the marker, when the instance's recorded UUID (if any) agrees; then by UUID.
    for instance in instances:
        for vm in by_owner.get(str(instance.pk), ()):
            if vm.moid not in claimed and (not instance.vcenter_uuid or instance.vcenter_uuid == vm.instance_uuid):
                take(instance, vm)
                break
    for instance in instances:
        if instance.pk not in matches and instance.vcenter_uuid:
            vm = next((vm for vm in by_uuid.get(instance.vcenter_uuid, ()) if free(vm, instance)), None)
            if vm is not None:
                take(instance, vm)
    # By name (a VM whose UUID is not the one recorded is another VM); adopted instances also by guest IP.
    for index, key in ((by_name, "vm_name"), (by_ip, "ip_address")):
        for instance in instances:
            value = getattr(instance, key)
            if instance.pk in matches or not value:
                continue
            if key == "ip_address" and instance.origin != ManagedInstance.Origin.ADOPTED:
                continue
            candidates = [
                vm
                for vm in index.get(value, ())
                if free(vm, instance) and (not instance.vcenter_uuid or vm.instance_uuid == instance.vcenter_uuid)
            ]
            if len(candidates) == 1:
                take(instance, candidates[0])
            elif len(candidates) > 1:
                unresolved[instance.pk] = (
                    _("%(count)d VMs in vCenter are called %(value)s; left as it is until one is renamed.")
                    if key == "vm_name"
                    else _("%(count)d VMs in vCenter report the IP %(value)s; left as it is.")
                ) % {"count": len(candidates), "value": value}
    return matches, {pk: reason for pk, reason in unresolved.items() if pk not in matches}


def _record(result, *, started, scope, actor, user=None):
    changes = result.changes[:CHANGES_KEPT]
    if len(result.changes) > CHANGES_KEPT:
        changes.append(f"... {len(result.changes) - CHANGES_KEPT} more (see the instances' histories)")
    with transaction.atomic():
        run = _record_run(result, started=started, scope=scope, actor=actor, changes=changes)
        # Asked by an operator (admin, command): in the audit trail; the schedule's passes are not.
        audit.operator_action(
            name="reconcile",
            instance=run,
            user=user,
            details={"services": scope or "*", "lost": result.lost, "unhealthy": result.unhealthy, "ok": result.ok},
        )
    stale = list(ReconcileRun.objects.order_by("-started_at", "-pk").values_list("pk", flat=True)[RUNS_KEPT:][:1])
    if stale:
        ReconcileRun.objects.filter(pk__lte=stale[0]).delete()
    return run.pk


def _record_run(result, *, started, scope, actor, changes):
    return ReconcileRun.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        service=scope[:48],
        actor=actor[:100],
        ok=result.ok,
        error="\n".join(result.errors),
        instances=result.instances,
        vms=result.vms,
        changes=changes,
        vcenter_requests=result.vcenter_requests,
        f5_requests=result.f5_requests,
    )
