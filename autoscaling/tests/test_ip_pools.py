"""One arithmetic for an IP pool's addresses: validation, IPAM, the admin and the API count the same addresses,
and a list of pools costs the same queries however many pools it shows."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from autoscaling import ipam, services
from autoscaling.models import IpAllocation, IpPool

pytestmark = pytest.mark.django_db

State = IpAllocation.State
CHANGELIST = "/admin/autoscaling/ippool/"


def make_pool(name, first="127.77.0.10", last="127.77.0.19", **fields):
    return IpPool.objects.create(
        name=name,
        network="127.77.0.0/24",
        first_address=first,
        last_address=last,
        gateway=fields.pop("gateway", "127.77.0.1"),
        ping_check=False,
        **fields,
    )


@pytest.fixture
def admin_user():
    return get_user_model().objects.create(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_a_dns_server_inside_the_range_is_not_usable_for_validation_nor_ipam(make_config):
    pool = make_pool("dns-inside", last="127.77.0.12", dns_servers=["127.77.0.11"])
    assert list(pool.usable_addresses()) == ["127.77.0.10", "127.77.0.12"]
    assert pool.usable_count == 2
    # Validation counts what IPAM hands out: a config that needs 3 addresses is refused ...
    with pytest.raises(ValidationError, match="2 usable addresses, fewer than the maximum of 3"):
        make_config(ip_pool=pool, max_instances=3)
    make_config(ip_pool=pool, max_instances=2)
    # ... and the 2 it accepts are exactly what IPAM reserves before the pool runs out.
    reserved = [ipam.ip_reserve(pool=pool).address for _ in range(2)]
    assert reserved == ["127.77.0.10", "127.77.0.12"]
    with pytest.raises(ipam.PoolExhausted):
        ipam.ip_reserve(pool=pool)
    assert services.ip_pool_usage(pool=pool) == {
        "size": 2,
        "reserved": 2,
        "in_use": 0,
        "skipped": 0,
        "used": 2,
        "free": 0,
    }


def test_network_broadcast_gateway_dns_and_excluded_addresses_are_never_usable():
    # Made without clean(): even a range over the whole network never yields its reserved addresses.
    pool = make_pool(
        "everything",
        first="127.77.0.0",
        last="127.77.0.255",
        gateway="127.77.0.1",
        dns_servers=["127.77.0.2", " 127.77.0.3 ", "10.0.0.53"],
        excluded_addresses=["127.77.0.4"],
    )
    usable = list(pool.usable_addresses())
    assert usable[0] == "127.77.0.5" and usable[-1] == "127.77.0.254"
    assert pool.usable_count == len(usable) == 250
    assert not pool.hands_out("127.77.0.255") and not pool.hands_out("127.77.0.3") and pool.hands_out("127.77.0.9")


def test_an_allocated_address_cannot_become_a_dns_server_or_excluded(make_config):
    pool = make_pool("busy")
    IpAllocation.objects.create(pool=pool, address="127.77.0.12", state=State.IN_USE)
    with pytest.raises(ValidationError) as refused:
        services.ip_pool_update(pool=pool, data={"dns_servers": ["127.77.0.12"]})
    assert "127.77.0.12" in " ".join(refused.value.message_dict["dns_servers"])
    with pytest.raises(ValidationError) as refused:
        services.ip_pool_update(pool=IpPool.objects.get(pk=pool.pk), data={"excluded_addresses": ["127.77.0.12"]})
    assert "127.77.0.12" in " ".join(refused.value.message_dict["excluded_addresses"])
    # Nor can an allocation be made by hand for an address the pool does not hand out.
    for address in ("127.77.0.1", "127.77.0.30"):
        with pytest.raises(ValidationError, match="not one of the addresses"):
            IpAllocation(pool=pool, address=address, state=State.RESERVED).full_clean()
    IpAllocation(pool=pool, address="127.77.0.13", state=State.RESERVED).full_clean()
    IpAllocation(pool=pool, address="127.77.0.30", state=State.RELEASED).full_clean()  # history may stay


def test_a_skip_mark_outside_the_new_range_is_dropped_so_free_stays_right():
    pool = make_pool("shrinks")
    IpAllocation.objects.create(pool=pool, address="127.77.0.19", state=State.SKIPPED)
    IpAllocation.objects.create(pool=pool, address="127.77.0.11", state=State.SKIPPED)
    assert services.ip_pool_usage(pool=pool)["free"] == 8
    services.ip_pool_update(pool=pool, data={"last_address": "127.77.0.15"})
    assert list(pool.allocations.values_list("address", flat=True)) == ["127.77.0.11"]
    assert services.ip_pool_usage(pool=pool) == {
        "size": 6,
        "reserved": 0,
        "in_use": 0,
        "skipped": 1,
        "used": 0,
        "free": 5,
    }


def _pools(count):
    """`count` pools, each with a DNS server inside its range, one address in use, one reserved and one skipped."""
    for n in range(count):
        pool = make_pool(f"pool-{n:02d}", dns_servers=["127.77.0.15"], excluded_addresses=["127.77.0.16"])
        IpAllocation.objects.create(pool=pool, address="127.77.0.10", state=State.IN_USE)
        IpAllocation.objects.create(pool=pool, address="127.77.0.11", state=State.RESERVED)
        IpAllocation.objects.create(pool=pool, address="127.77.0.12", state=State.SKIPPED)
        IpAllocation.objects.create(pool=pool, address="127.77.0.13", state=State.RELEASED)


# 10 addresses - DNS - excluded = 8 usable; 2 used, 1 skipped: 5 free.
EXPECTED = {"size": 8, "used": 2, "free": 5}


def test_the_api_list_agrees_and_costs_the_same_queries_for_one_pool_or_many(api):
    _pools(1)
    with CaptureQueriesContext(connection) as one:
        listed = api.get("/api/autoscaling/ip-pools").json()["results"]
    assert [{k: p[k] for k in EXPECTED} for p in listed] == [EXPECTED]
    more = [make_pool(f"more-{n}") for n in range(7)]
    for extra in more:
        IpAllocation.objects.create(pool=extra, address="127.77.0.10", state=State.IN_USE)
    with CaptureQueriesContext(connection) as many:
        listed = api.get("/api/autoscaling/ip-pools").json()["results"]
    assert len(listed) == 8
    assert len(many) == len(one) == 2  # the page count and one annotated SELECT
    assert {k: listed[-1][k] for k in EXPECTED} == EXPECTED  # "pool-00" sorts after "more-*"
    assert {(p["size"], p["used"], p["free"]) for p in listed[:-1]} == {(10, 1, 9)}
    detail = api.get(f"/api/autoscaling/ip-pools/{IpPool.objects.get(name='pool-00').pk}").json()
    assert {k: detail[k] for k in EXPECTED} == EXPECTED


def _cells(page, column):
    return re.findall(rf'<td class="field-{column}">([^<]*)</td>', page)


def test_the_admin_list_agrees_and_costs_the_same_queries_for_one_pool_or_many(client, admin_user):
    client.force_login(admin_user)
    _pools(1)
    with CaptureQueriesContext(connection) as one:
        page = client.get(CHANGELIST).content.decode()
    assert (_cells(page, "size"), _cells(page, "used"), _cells(page, "free")) == (["8"], ["2"], ["5"])
    for n in range(1, 8):
        make_pool(f"pool-{n:02d}-more", dns_servers=["127.77.0.15"], excluded_addresses=["127.77.0.16"])
    with CaptureQueriesContext(connection) as many:
        page = client.get(CHANGELIST).content.decode()
    assert _cells(page, "free") == ["5", *["8"] * 7]
    assert len(many) == len(one)
    # The change page's usage line says the same.
    pool = IpPool.objects.get(name="pool-00")
    page = client.get(f"{CHANGELIST}{pool.pk}/change/").content.decode()
    assert "8 addresses: 1 in use, 1 reserved, 1 skipped, 5 free" in page
