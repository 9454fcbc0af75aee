"""IP address management for scale-outs: reserve, confirm, skip and release addresses of an IpPool.

An address is taken by the row that holds it: IpAllocation is unique on (pool, address), so two pipelines that
reserve at the same moment can never get the same address. A reservation either inserts a new row (the loser of
a race gets an IntegrityError and tries the next address) or takes over a released row with a conditional UPDATE
(`... WHERE state = 'released'`: on PostgreSQL the second updater waits for the first, re-reads the row and
updates nothing). No table lock, no SELECT FOR UPDATE over the pool.

An address that answered a ping is recorded as `skipped` and not handed out again for
IPAM_SKIPPED_RETRY_SECONDS, so a host someone put there without telling the portal is not hit twice in a row.
"""

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from autoscaling.models import IpAllocation, IpPool
from autoscaling.services import provisioning_request_on_commit

State = IpAllocation.State


class IpamError(Exception):
    """A reservation, confirmation or release that cannot be done; `code` says why in one word."""

    def __init__(self, message, *, code):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):
        return self.message


class PoolExhausted(IpamError):
    def __init__(self, message):
        super().__init__(message, code="pool_exhausted")


def _skipped_retry_after():
    seconds = settings.IPAM_SKIPPED_RETRY_SECONDS
    return timezone.now() - timedelta(seconds=seconds)


def _reusable_q():
    """Rows whose address may be handed out again: released ones, and skipped ones old enough to try again."""
    return Q(state=State.RELEASED) | Q(state=State.SKIPPED, updated_at__lt=_skipped_retry_after())


def ip_reserve(*, pool, event=None, vm_name="", note=""):
    """Reserve the pool's lowest free usable address (`IpPool.usable_addresses`) for `event`; raises PoolExhausted
    when none is left."""
    held = set(IpAllocation.objects.filter(pool=pool).exclude(_reusable_q()).values_list("address", flat=True))
    existing = set(IpAllocation.objects.filter(pool=pool).values_list("address", flat=True))
    now = timezone.now()
    for address in pool.usable_addresses():
        if address in held:
            continue
        if address in existing:
            taken = (
                IpAllocation.objects.filter(pool=pool, address=address)
                .filter(_reusable_q())
                .update(
                    state=State.RESERVED,
                    event=event,
                    vm_name=vm_name,
                    note=note,
                    reserved_at=now,
                    updated_at=now,
                    released_at=None,
                )
            )
            if taken:
                return IpAllocation.objects.get(pool=pool, address=address)
            continue
        try:
            with transaction.atomic():
                return IpAllocation.objects.create(
                    pool=pool, address=address, state=State.RESERVED, event=event, vm_name=vm_name, note=note
                )
        except IntegrityError:
            # Another pipeline inserted this address a moment ago: try the next one.
            continue
    raise PoolExhausted(
        _("IP pool %(pool)s is exhausted: no free address between %(first)s and %(last)s.")
        % {"pool": pool.name, "first": pool.first_address, "last": pool.last_address}
    )


def _event_allocation(*, pool, address, event):
    try:
        address = str(ipaddress.IPv4Address(str(address).strip()))
    except ValueError:
        raise IpamError(_("%(address)s is not an IPv4 address.") % {"address": address}, code="invalid") from None
    allocation = IpAllocation.objects.filter(pool=pool, address=address).first()
    if allocation is None or (event is not None and allocation.event_id != event.pk):
        raise IpamError(
            _("%(address)s is not reserved for this event in pool %(pool)s.") % {"address": address, "pool": pool.name},
            code="not_reserved",
        )
    return allocation


def ip_allocation_held(*, pool, address, event):
    """The allocation by which `event` holds `address` (reserved or in use); IpamError otherwise."""
    allocation = _event_allocation(pool=pool, address=address, event=event)
    if allocation.state not in (State.RESERVED, State.IN_USE):
        raise IpamError(
            _("%(address)s is %(state)s, no longer held by this event.")
            % {"address": allocation.address, "state": allocation.get_state_display()},
            code="not_reserved",
        )
    return allocation


def ip_confirm(*, pool, address, event, vm_name):
    """The VM got the address: mark it in use (idempotent)."""
    allocation = _event_allocation(pool=pool, address=address, event=event)
    if allocation.state == State.IN_USE and allocation.vm_name == vm_name:
        return allocation
    updated = IpAllocation.objects.filter(pk=allocation.pk, state__in=[State.RESERVED, State.IN_USE]).update(
        state=State.IN_USE, vm_name=vm_name, updated_at=timezone.now()
    )
    if not updated:
        raise IpamError(
            _("%(address)s can no longer be confirmed: it is %(state)s.")
            % {"address": allocation.address, "state": allocation.get_state_display()},
            code="not_reserved",
        )
    allocation.refresh_from_db()
    # The VM is now a scrape target of its service (provisioning lists in-use addresses); the update above sends
    # no post_save signal, so ask for the pass here.
    provisioning_request_on_commit(reason=f"address {allocation.address} in use by {vm_name}")
    return allocation


def ip_mark_skipped(*, pool, address, event, note=""):
    """The address answered a ping: keep it out of reservations for a while (idempotent)."""
    allocation = _event_allocation(pool=pool, address=address, event=event)
    if allocation.state == State.SKIPPED:
        return allocation
    updated = IpAllocation.objects.filter(pk=allocation.pk, state=State.RESERVED).update(
        state=State.SKIPPED, note=note[:200] or _("answered ping"), updated_at=timezone.now()
    )
    if not updated:
        raise IpamError(
            _("%(address)s cannot be skipped: it is %(state)s.")
            % {"address": allocation.address, "state": allocation.get_state_display()},
            code="not_reserved",
        )
    allocation.refresh_from_db()
    return allocation


def ip_release(*, pool, event, address=None, states=(State.RESERVED, State.IN_USE)):
    """Give back one address of `event` (or all its reserved and in-use ones); releasing twice is harmless.

    Returns the released allocations. Skipped addresses stay skipped: they answered a ping, releasing them would
    hand them out again at once. `states` narrows what is given back.
    """
    rows = IpAllocation.objects.filter(pool=pool, event=event, state__in=states)
    if address is not None:
        allocation = _event_allocation(pool=pool, address=address, event=event)
        rows = rows.filter(pk=allocation.pk)
    released = list(rows)
    now = timezone.now()
    IpAllocation.objects.filter(pk__in=[a.pk for a in released], state__in=states).update(
        state=State.RELEASED, released_at=now, updated_at=now
    )
    if any(allocation.state == State.IN_USE for allocation in released):
        # An address in use was a scrape target: the next pass takes it out.
        owner = f"of event {event.pk}" if event is not None else " ".join(a.address for a in released)
        provisioning_request_on_commit(reason=f"addresses {owner} released")
    for allocation in released:
        allocation.state = State.RELEASED
        allocation.released_at = now
    return released


# --- what an event's callback token may do (the pipeline's endpoints) ------------------------------------------
def ip_reserve_for_event(*, pool, event):
    """The pipeline's reservation: at most the event's `vm_count` addresses held (reserved or in use) at a time, so
    one event's token cannot take the pool; addresses it skipped (they answered a ping) do not count. IpamError
    `reservation_limit` beyond that. Serialized per event by a lock on its row, in the caller's transaction."""
    vm_count = type(event).objects.select_for_update().values_list("vm_count", flat=True).get(pk=event.pk)
    held = IpAllocation.objects.filter(pool=pool, event=event, state__in=[State.RESERVED, State.IN_USE]).count()
    if held >= vm_count:
        raise IpamError(
            _(
                "Event #%(event)s already holds %(held)d addresses for its %(count)d VMs; release one (or mark it "
                "skipped) before reserving another."
            )
            % {"event": event.pk, "held": held, "count": vm_count},
            code="reservation_limit",
        )
    return ip_reserve(pool=pool, event=event)


def ip_release_for_event(*, pool, event, address=None):
    """The pipeline's release: `ip_release`, except that a finished event's token gives back only addresses still
    reserved; an address in use by a VM stays (the VM runs; the fleet's reconcile releases it when the VM goes)."""
    if not event.is_finished:
        return ip_release(pool=pool, event=event, address=address)
    if address is not None:
        allocation = _event_allocation(pool=pool, address=address, event=event)
        if allocation.state == State.IN_USE:
            raise IpamError(
                _("%(address)s is in use by %(vm)s; event #%(event)s has finished and can no longer release it.")
                % {"address": allocation.address, "vm": allocation.vm_name or "-", "event": event.pk},
                code="in_use",
            )
    return ip_release(pool=pool, event=event, address=address, states=(State.RESERVED,))


def ip_pool_for_event(*, event):
    """The pool the event's config takes addresses from, or IpamError when the config has none."""
    pool = IpPool.objects.filter(configs__id=event.config_id).first()
    if pool is None:
        raise IpamError(
            _("The config of %(service)s has no IP pool: set one before scaling out.")
            % {"service": event.service_name},
            code="no_pool",
        )
    return pool
