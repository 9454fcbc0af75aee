"""The IP pool service: lowest free address, no address twice, released addresses reused, exhaustion reported."""

import threading

import pytest
from django.db import close_old_connections, connection

from autoscaling import ipam
from autoscaling.models import IpAllocation
from autoscaling.services import ip_pool_usage
from tests.pipeline.conftest import skip_on_in_memory_sqlite

State = IpAllocation.State


def test_reserve_takes_lowest_free_address_skipping_gateway_dns_and_excluded(make_pool, ip):
    pool = make_pool(
        first=ip(1),
        last=ip(6),
        gateway=ip(1),
        dns_servers=[ip(2)],
        excluded_addresses=[ip(3)],
    )
    first = ipam.ip_reserve(pool=pool)
    second = ipam.ip_reserve(pool=pool)
    assert (first.address, second.address) == (ip(4), ip(5))
    assert first.state == State.RESERVED


def test_confirm_release_and_reuse(make_event):
    event, _token = make_event()
    pool = event.config.ip_pool
    allocation = ipam.ip_reserve(pool=pool, event=event)
    ipam.ip_confirm(pool=pool, address=allocation.address, event=event, vm_name="web-001")
    allocation.refresh_from_db()
    assert (allocation.state, allocation.vm_name) == (State.IN_USE, "web-001")

    released = ipam.ip_release(pool=pool, event=event)
    assert [a.address for a in released] == [allocation.address]
    assert ipam.ip_release(pool=pool, event=event) == []  # twice is harmless
    allocation.refresh_from_db()
    assert allocation.state == State.RELEASED and allocation.released_at is not None

    other, _ = make_event(pool=pool)
    again = ipam.ip_reserve(pool=pool, event=other)
    assert again.pk == allocation.pk and again.address == allocation.address
    assert (again.state, again.event_id, again.released_at) == (State.RESERVED, other.pk, None)


def test_an_event_cannot_confirm_or_release_another_events_address(make_event):
    event, _ = make_event()
    pool = event.config.ip_pool
    other, _ = make_event(pool=pool)
    allocation = ipam.ip_reserve(pool=pool, event=event)
    with pytest.raises(ipam.IpamError) as err:
        ipam.ip_confirm(pool=pool, address=allocation.address, event=other, vm_name="x")
    assert err.value.code == "not_reserved"
    with pytest.raises(ipam.IpamError):
        ipam.ip_release(pool=pool, event=other, address=allocation.address)
    allocation.refresh_from_db()
    assert allocation.state == State.RESERVED


def test_skipped_address_is_not_handed_out_again_until_retry_time(make_event, settings):
    event, _ = make_event()
    pool = event.config.ip_pool
    first = ipam.ip_reserve(pool=pool, event=event)
    ipam.ip_mark_skipped(pool=pool, address=first.address, event=event, note="answered ping")
    assert ipam.ip_reserve(pool=pool, event=event).address != first.address
    settings.IPAM_SKIPPED_RETRY_SECONDS = -1
    assert ipam.ip_reserve(pool=pool, event=event).address == first.address


def test_exhausted_pool_raises_with_the_range(make_pool, ip):
    pool = make_pool(first=ip(10), last=ip(11))
    ipam.ip_reserve(pool=pool)
    ipam.ip_reserve(pool=pool)
    with pytest.raises(ipam.PoolExhausted) as err:
        ipam.ip_reserve(pool=pool)
    assert ip(10) in str(err.value) and ip(11) in str(err.value)
    assert ip_pool_usage(pool=pool)["free"] == 0  # the pools screen agrees


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_share_an_address(make_event):
    """Threads with their own connections reserve from one pool at once (the CI database is PostgreSQL)."""
    skip_on_in_memory_sqlite()
    event, _ = make_event()
    pool = event.config.ip_pool  # .10 to .20: 11 addresses
    # Some released rows, so the conditional-UPDATE path races too, not only the INSERT path.
    for _ in range(4):
        ipam.ip_reserve(pool=pool, event=event)
    ipam.ip_release(pool=pool, event=event)

    workers, results, errors = 10, [], []
    barrier = threading.Barrier(workers)

    def reserve():
        try:
            barrier.wait(timeout=10)
            results.append(ipam.ip_reserve(pool=pool, event=event).address)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == workers and len(set(results)) == workers
    held = IpAllocation.objects.filter(pool=pool, state=State.RESERVED).count()
    assert held == workers
