"""The orphan sweep: what the portal made that no live instance accounts for, found, reported with its age, and
removed after a grace period.

Three kinds, each decided from what the pass reads now (one vCenter property-collector pass, one member read per
managed F5 pool, the database):
- a VM carrying the portal's ownership marker (`integrations.vcenter.OWNERSHIP_FIELD`) whose value names no live
  instance (a clone left behind by a timeout, a crash, a failed undo). A VM without the marker is never touched,
  whatever its name;
- a member of a managed F5 pool at an address of its service's IP pool range that no live instance of the pool
  holds (members at other addresses were put there by someone else: never touched);
- an IP allocation, reserved or in use, held by no live instance and by no event still in progress.

Each finding is an Orphan row (one open row per thing, its first and last sighting); a thing that stops being an
orphan closes its row as "gone". Removing (`fix`: `manage.py sweep_orphans --fix`, the admin's action, or the
schedule when ORPHAN_SWEEP_FIX is set) acts only on orphans found again by the same pass and seen for at least
FLEET_ORPHAN_GRACE seconds: a VM is powered off first and destroyed FLEET_ORPHAN_DESTROY_GRACE seconds later, a
member is removed (with its node when no other pool uses it), an allocation released. A part that cannot be read
(vCenter or a pool down) is left out of the pass: its open orphans stay as they are.
"""

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from access import audit
from autoscaling import ipam
from autoscaling.models import AutoscalingConfig, IpAllocation
from common.clients import f5_client, vcenter_client
from events.models import ScaleOutEvent
from fleet.models import ManagedInstance, Orphan
from integrations.errors import IntegrationError
from integrations.f5 import member_name

logger = logging.getLogger(__name__)

Kind = Orphan.Kind
OState = Orphan.State
ACTOR = "orphan sweep"


class UnknownService(Exception):
    """The sweep was asked for a service that has no config."""


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    name: str
    reason: str
    config_id: int | None = None
    details: dict = field(default_factory=dict)


@dataclass
class SweepResult:
    found: list = field(default_factory=list)  # Orphan rows open after the pass
    fixed: list = field(default_factory=list)  # lines: what was powered off, destroyed, removed, released
    errors: list = field(default_factory=list)
    closed: int = 0
    seconds: float = 0.0


def orphans_sweep(*, fix=False, service=None, only_ids=None, actor=ACTOR, now=None):
    """One pass; returns a SweepResult. `fix`: remove the orphans past their grace (`only_ids`: only these Orphan
    rows). `service`: only that service's pools and allocations, and the VMs whose marker names its instances."""
    clock = time.perf_counter()
    now = now or timezone.now()
    configs = AutoscalingConfig.objects.select_related("ip_pool").order_by("pk")
    if service is not None:
        configs = configs.filter(service_name=service)
        if not configs.exists():
            raise UnknownService(
                _("There is no autoscaling config for the service %(service)s.") % {"service": service}
            )
    configs = list(configs)
    result = SweepResult()
    findings, scanned = [], []  # scanned: (kind, key prefix) parts read completely this pass

    vms = _read_vms(result)
    if vms is not None:
        findings += _vm_findings(vms, configs if service is not None else None)
        scanned.append((Kind.VM, ""))
    for config, members, prefix in _read_members(configs, result):
        findings += _member_findings(config, members, prefix)
        scanned.append((Kind.MEMBER, prefix))
    findings += _allocation_findings(configs)
    for config in configs:
        if config.ip_pool_id:
            scanned.append((Kind.ALLOCATION, f"{config.ip_pool_id}/"))

    rows = _record(findings, scanned, now, result)
    result.found = rows
    if fix:
        grace = timedelta(seconds=settings.FLEET_ORPHAN_GRACE)
        vm_facts = {vm.moid: vm for vm in vms or ()}
        for row in rows:
            if only_ids is not None and row.pk not in only_ids:
                continue
            if row.first_seen_at > now - grace:
                continue
            _fix(row, vm_facts, now, result, actor=actor)
        # Asked by an operator (the admin's action, sweep_orphans --fix): in the audit trail; the schedule's are not.
        details = {"removed": result.fixed[:50], "errors": result.errors[:20]}
        audit.operator_action(name="orphans_remove", model=Orphan, label="orphans", details=details)
    result.seconds = time.perf_counter() - clock
    return result


# --- reading -----------------------------------------------------------------------------------------------------
def _read_vms(result):
    try:
        with vcenter_client() as vcenter:
            return vcenter.list_vm_facts()
    except IntegrationError as exc:
        result.errors.append(_("vCenter: %(error)s") % {"error": exc})
        return None


def _managed_pools(configs):
    """(partition, pool) -> the configs that use it (configs with an F5 pool and an IP pool)."""
    pools = {}
    for config in configs:
        if config.f5_pool and config.ip_pool_id:
            pools.setdefault((config.f5_partition or "Common", config.f5_pool), []).append(config)
    return pools


def _read_members(configs, result):
    pools = _managed_pools(configs)
    if not pools:
        return []
    read = []
    try:
        with f5_client() as f5:
            for (partition, pool), users in pools.items():
                try:
                    members = f5.list_members(pool, partition)
                except IntegrationError as exc:
                    result.errors.append(
                        _("F5 pool /%(partition)s/%(pool)s: %(error)s")
                        % {"partition": partition, "pool": pool, "error": exc}
                    )
                    continue
                for config in users:
                    read.append((config, members, f"/{partition}/{pool}/"))
    except IntegrationError as exc:
        result.errors.append(_("F5: %(error)s") % {"error": exc})
    return read


def _live():
    return ManagedInstance.objects.filter(state__in=ManagedInstance.LIVE_STATES)


def _vm_findings(vms, configs):
    marked = [vm for vm in vms if vm.owner and not vm.is_template]
    ids = {int(vm.owner) for vm in marked if vm.owner.isdigit()}
    live = set(_live().filter(pk__in=ids).values_list("pk", flat=True))
    known = dict(ManagedInstance.objects.filter(pk__in=ids).values_list("pk", "config_id"))
    wanted = {config.pk for config in configs} if configs is not None else None
    findings = []
    for vm in marked:
        instance_id = int(vm.owner) if vm.owner.isdigit() else None
        if instance_id in live:
            continue
        config_id = known.get(instance_id)
        if wanted is not None and config_id not in wanted:
            continue
        if config_id is None:
            reason = _("Carries the portal's marker %(marker)s, but no instance has that id.") % {"marker": vm.owner}
        else:
            reason = _("Carries the marker of instance #%(id)s, which is no longer live.") % {"id": instance_id}
        findings.append(
            Finding(
                Kind.VM,
                vm.moid,
                vm.name,
                reason,
                config_id,
                {"power_state": vm.power_state, "ip": vm.ip_address, "marker": vm.owner},
            )
        )
    return findings


def _held_members(config):
    """Member names and addresses that the live instances of every config sharing this pool hold."""
    names, addresses = set(), set()
    sharing = _live().filter(config__f5_pool=config.f5_pool, config__f5_partition=config.f5_partition)
    for instance in sharing.select_related("config"):
        if instance.f5_member:
            names.add(instance.f5_member)
        if instance.ip_address:
            addresses.add(instance.ip_address)
            names.add(member_name(instance.ip_address, instance.config.f5_member_port))
    return names, addresses


def _in_range(pool, address):
    try:
        value = ipaddress.IPv4Address(address)
        return ipaddress.IPv4Address(pool.first_address) <= value <= ipaddress.IPv4Address(pool.last_address)
    except ValueError:
        return False


def _member_findings(config, members, prefix):
    names, addresses = _held_members(config)
    findings = []
    for member in members:
        if member.name in names or member.address in addresses or not _in_range(config.ip_pool, member.address):
            continue
        findings.append(
            Finding(
                Kind.MEMBER,
                prefix + member.name,
                prefix + member.name,
                _("In pool %(pool)s at an address of IP pool %(ip_pool)s that no live instance holds.")
                % {"pool": prefix.strip("/"), "ip_pool": config.ip_pool.name},
                config.pk,
                {"address": member.address, "port": member.port, "state": member.state, "session": member.session},
            )
        )
    return findings


def _allocation_findings(configs):
    pools = {config.ip_pool_id: config for config in configs if config.ip_pool_id}
    if not pools:
        return []
    held = _live().filter(ip_allocation__isnull=False).values_list("ip_allocation_id", flat=True)
    held_addresses = set(_live().exclude(ip_address=None).values_list("ip_address", flat=True))
    rows = (
        IpAllocation.objects.filter(
            pool_id__in=pools, state__in=[IpAllocation.State.RESERVED, IpAllocation.State.IN_USE]
        )
        .exclude(pk__in=held)
        .exclude(Q(event__status__in=ScaleOutEvent.ACTIVE_STATUSES))
        .select_related("pool", "event")
    )
    findings = []
    for allocation in rows:
        if allocation.address in held_addresses:
            continue
        event = allocation.event
        reason = (
            _("%(state)s by event #%(event)d (%(status)s), held by no live instance.")
            % {"state": allocation.get_state_display(), "event": event.pk, "status": event.get_status_display()}
            if event is not None
            else _("%(state)s, held by no live instance.") % {"state": allocation.get_state_display()}
        )
        findings.append(
            Finding(
                Kind.ALLOCATION,
                f"{allocation.pool_id}/{allocation.pk}",
                f"{allocation.address} ({allocation.pool.name})",
                reason,
                pools[allocation.pool_id].pk,
                {"allocation": allocation.pk, "address": allocation.address, "event": allocation.event_id},
            )
        )
    return findings


# --- recording ---------------------------------------------------------------------------------------------------
def _record(findings, scanned, now, result):
    """Open or refresh a row per finding; close the open rows of the scanned parts that were not found again."""
    with transaction.atomic():
        open_rows = {(row.kind, row.key): row for row in Orphan.objects.filter(state__in=Orphan.OPEN_STATES)}
        seen = []
        for finding in findings:
            row = open_rows.get((finding.kind, finding.key))
            if row is None:
                row = Orphan.objects.create(
                    kind=finding.kind,
                    key=finding.key,
                    name=finding.name[:255],
                    config_id=finding.config_id,
                    reason=finding.reason[:500],
                    details=finding.details,
                    first_seen_at=now,
                    last_seen_at=now,
                )
                logger.warning("orphan found: %s %s: %s", finding.kind, finding.name, finding.reason)
            else:
                row.last_seen_at, row.reason, row.details = now, finding.reason[:500], finding.details
                row.save(update_fields=["last_seen_at", "reason", "details"])
            seen.append(row)
        seen_keys = {(row.kind, row.key) for row in seen}
        for (kind, key), row in open_rows.items():
            if (kind, key) in seen_keys:
                continue
            if any(kind == scanned_kind and key.startswith(prefix) for scanned_kind, prefix in scanned):
                row.state, row.closed_at = OState.GONE, now
                row.save(update_fields=["state", "closed_at"])
                result.closed += 1
    return seen


# --- removing ----------------------------------------------------------------------------------------------------
def _fix(row, vm_facts, now, result, *, actor):
    try:
        line = _remove(row, vm_facts, now)
    except IntegrationError as exc:
        row.last_error = str(exc)[:2000]
        row.save(update_fields=["last_error"])
        result.errors.append(f"{row}: {exc}")
        return
    if line:
        logger.info("%s: %s", actor, line)
        result.fixed.append(line)


def _remove(row, vm_facts, now):
    if row.kind == Kind.VM:
        vm = vm_facts.get(row.key)
        if vm is None or not vm.owner:  # never a VM this pass did not see with the marker
            return ""
        with vcenter_client() as vcenter:
            if row.state == OState.FOUND:
                if vm.powered_on:
                    vcenter.power_off(vm.moid)
                row.state, row.powered_off_at, row.last_error = OState.POWERED_OFF, now, ""
                row.save(update_fields=["state", "powered_off_at", "last_error"])
                return _("VM %(vm)s powered off; destroyed after %(grace)d s.") % {
                    "vm": row.name,
                    "grace": settings.FLEET_ORPHAN_DESTROY_GRACE,
                }
            if row.powered_off_at > now - timedelta(seconds=settings.FLEET_ORPHAN_DESTROY_GRACE):
                return ""
            vcenter.destroy_vm(vm.moid)
        _removed(row, now)
        return _("VM %(vm)s destroyed.") % {"vm": row.name}
    if row.kind == Kind.MEMBER:
        config = row.config
        details = row.details
        with f5_client() as f5:
            f5.remove_member(
                config.f5_pool, config.f5_partition or "Common", details["address"], details["port"], delete_node=True
            )
        _removed(row, now)
        return _("Member %(member)s removed.") % {"member": row.name}
    allocation = IpAllocation.objects.select_related("pool", "event").filter(pk=row.details["allocation"]).first()
    if allocation is not None:
        ipam.ip_release(pool=allocation.pool, event=allocation.event, address=allocation.address)
    _removed(row, now)
    return _("IP address %(address)s released.") % {"address": row.details["address"]}


def _removed(row, now):
    row.state, row.closed_at, row.last_error = OState.REMOVED, now, ""
    row.save(update_fields=["state", "closed_at", "last_error"])
