"""integrations.f5 (iControl REST with requests) against the lab's F5 stand-in."""

import time
import uuid

import pytest

from integrations.errors import IntegrationError
from integrations.f5 import F5Client
from lab.components.f5 import F5StandinControl
from lab.core import free_port

pytestmark = pytest.mark.lab

PARTITION = "Common"


@pytest.fixture(scope="module")
def f5_lab(lab):
    return lab.info("f5")


@pytest.fixture
def control(f5_lab):
    control = F5StandinControl(f5_lab["control_url"])
    control.reset()
    control.configure(up_delay=1.0, default_state="up", address_states={}, refuse_login=False)
    yield control
    control.reset()
    control.configure(up_delay=0.5, default_state="up", address_states={}, refuse_login=False)


@pytest.fixture
def client(f5_lab):
    with F5Client(f5_lab["url"], f5_lab["user"], f5_lab["password"], verify_tls=False, timeout=5.0) as client:
        yield client


@pytest.fixture
def pool(control):
    name = f"web_{uuid.uuid4().hex[:8]}"
    control.create_pool(name)
    return name


def test_add_member_wait_until_up_and_remove(client, control, pool):
    assert client.pool_exists(pool, PARTITION)
    info = client.get_pool(pool, PARTITION)
    assert info.full_path == f"/{PARTITION}/{pool}" and info.monitor == "/Common/tcp"

    state = client.add_member(pool, PARTITION, "127.0.251.11", 8080)
    assert state.name == "127.0.251.11:8080" and state.address == "127.0.251.11" and state.port == 8080
    assert state.state == "checking" and not state.up

    state = client.wait_member_up(pool, PARTITION, "127.0.251.11", 8080, timeout=5, interval=0.1)
    assert state.up and state.state == "up" and state.session == "monitor-enabled"
    assert state.monitor_status == "up" and state.availability == "available"
    assert control.members(pool)["127.0.251.11:8080"]["state"] == "up"

    # idempotent: adding again is fine, and listing shows one member
    assert client.add_member(pool, PARTITION, "127.0.251.11", 8080).up
    assert [m.name for m in client.list_members(pool, PARTITION)] == ["127.0.251.11:8080"]

    # a node in use cannot go; after the member is removed it can, and both removals are idempotent
    with pytest.raises(IntegrationError) as error:
        client.delete_node(PARTITION, "127.0.251.11")
    assert error.value.code == "invalid" and error.value.permanent and "referenced" in error.value.message
    assert client.remove_member(pool, PARTITION, "127.0.251.11", 8080) is True
    assert client.remove_member(pool, PARTITION, "127.0.251.11", 8080) is False
    assert client.list_members(pool, PARTITION) == []
    assert client.delete_node(PARTITION, "127.0.251.11") is True
    assert client.delete_node(PARTITION, "127.0.251.11") is False

    # one login for the whole conversation, every /mgmt/tm call carried the token
    assert len(control.calls(path_contains="/authn/login")) == 1
    tm_calls = control.calls(path_contains="/mgmt/tm/")
    assert tm_calls and all(c["headers"].get("x-f5-auth-token") for c in tm_calls)
    (post,) = control.calls(path_contains=f"~{pool}/members", method="POST")[:1]
    assert '"address": "127.0.251.11"' in post["body"]


def test_named_node_and_member_down(client, control, pool):
    assert client.ensure_node(PARTITION, "vm-a", "127.0.251.12") == "created"
    assert client.ensure_node(PARTITION, "vm-a", "127.0.251.12") == "exists"
    with pytest.raises(IntegrationError) as error:
        client.ensure_node(PARTITION, "vm-a", "127.0.251.13")
    assert error.value.code == "conflict" and error.value.permanent
    with pytest.raises(IntegrationError) as error:
        client.ensure_node(PARTITION, "vm-b", "127.0.251.12")  # the address belongs to vm-a
    assert error.value.code == "conflict" and "already exists" in error.value.message

    control.configure(address_states={"127.0.251.12": "down"})
    state = client.add_member(pool, PARTITION, "127.0.251.12", 80, node_name="vm-a")
    assert state.name == "vm-a:80"
    with pytest.raises(IntegrationError) as error:
        client.wait_member_up(pool, PARTITION, "127.0.251.12", 80, node_name="vm-a", timeout=1.6, interval=0.1)
    assert error.value.code == "not_up" and not error.value.permanent
    assert "state down" in error.value.message and "marked down by a monitor" in error.value.message

    control.set_member_state(pool, "vm-a:80", "up")
    assert client.member_state(pool, PARTITION, "127.0.251.12", 80, node_name="vm-a").up

    # a rollback that deletes the node keeps it while another member still uses it
    client.add_member(pool, PARTITION, "127.0.251.12", 81, node_name="vm-a")
    assert client.remove_member(pool, PARTITION, "127.0.251.12", 80, node_name="vm-a", delete_node=True)
    assert "/Common/vm-a" in control.state()["nodes"]
    assert client.remove_member(pool, PARTITION, "127.0.251.12", 81, node_name="vm-a", delete_node=True)
    assert "/Common/vm-a" not in control.state()["nodes"]
    assert client.remove_member(pool, PARTITION, "127.0.251.12", 81, node_name="vm-a", delete_node=True) is False


def test_missing_pool_is_permanent(client):
    assert client.pool_exists("no_such_pool", PARTITION) is False
    with pytest.raises(IntegrationError) as error:
        client.add_member("no_such_pool", PARTITION, "127.0.251.14", 80)
    assert error.value.system == "f5" and error.value.code == "not_found" and error.value.permanent
    assert "pool /Common/no_such_pool" in error.value.message


def test_refused_login_is_permanent(f5_lab, control, pool):
    control.refuse_login()
    with F5Client(f5_lab["url"], f5_lab["user"], f5_lab["password"], verify_tls=False) as client:
        with pytest.raises(IntegrationError) as error:
            client.get_pool(pool, PARTITION)
    assert error.value.code == "unauthorized" and error.value.permanent
    assert "refused the login" in error.value.message and f5_lab["password"] not in error.value.message

    control.refuse_login(False)
    with F5Client(f5_lab["url"], f5_lab["user"], "wrong", verify_tls=False) as client:
        with pytest.raises(IntegrationError) as error:
            client.get_pool(pool, PARTITION)
    assert error.value.code == "unauthorized" and "F5_PASSWORD" in error.value.message


def f5_password_not_recorded(control):
    return all("****" in c["body"] for c in control.calls(path_contains="/authn/login"))


def test_expired_token_logs_in_again_once(client, control, pool):
    assert client.pool_exists(pool, PARTITION)
    control.expire_tokens()
    assert client.pool_exists(pool, PARTITION)
    assert len(control.calls(path_contains="/authn/login")) == 2
    statuses = [c["status"] for c in control.calls(path_contains=f"~{pool}")]
    assert statuses == [200, 401, 200]
    assert f5_password_not_recorded(control)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable(client, control, pool, status):
    control.fail_next(1, status, path="/members$", method="POST")
    with pytest.raises(IntegrationError) as error:
        client.add_member(pool, PARTITION, "127.0.251.15", 80)
    assert error.value.code == "server_error" and not error.value.permanent
    assert f"answered HTTP {status}" in error.value.message
    assert client.add_member(pool, PARTITION, "127.0.251.15", 80).name == "127.0.251.15:80"
    client.remove_member(pool, PARTITION, "127.0.251.15", 80)


def test_slow_or_unreachable_f5_is_retryable(f5_lab, control, pool):
    control.delay_next(1.0, path=f"~{pool}$")
    with F5Client(f5_lab["url"], f5_lab["user"], f5_lab["password"], verify_tls=False, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(IntegrationError) as error:
            client.get_pool(pool, PARTITION)
        assert time.monotonic() - started < 0.9
    assert error.value.code == "timeout" and not error.value.permanent

    with F5Client(f"http://127.0.0.1:{free_port()}", "admin", "x", timeout=2) as client:
        with pytest.raises(IntegrationError) as error:
            client.get_pool(pool, PARTITION)
    assert error.value.code == "unreachable" and not error.value.permanent
    assert "could not be reached" in error.value.message and "connection refused" in error.value.message

    control.drop_next(1, path="/authn/login")
    with F5Client(f5_lab["url"], f5_lab["user"], f5_lab["password"], verify_tls=False) as client:
        with pytest.raises(IntegrationError) as error:
            client.get_pool(pool, PARTITION)
    assert error.value.code == "unreachable" and "closed without an answer" in error.value.message


def test_disable_drain_force_offline_and_enable_a_member(client, control, pool):
    """The drain's F5 calls: session/state PATCHes with BIG-IP's values, serverside.curConns from the member's stats."""
    client.add_member(pool, PARTITION, "127.0.251.21", 8080)
    client.wait_member_up(pool, PARTITION, "127.0.251.21", 8080, timeout=5, interval=0.1)
    control.set_member_connections(pool, "127.0.251.21:8080", 4, decay_per_second=8)
    time.sleep(0.3)
    # Enabled: new connections replace those that end, the count holds.
    state = client.member_state(pool, PARTITION, "127.0.251.21", 8080)
    assert state.current_connections == 4 and state.enabled_state == "enabled" and state.up

    state = client.disable_member(pool, PARTITION, "127.0.251.21", 8080)
    assert state.session == "user-disabled" and not state.up
    stats = client.member_state(pool, PARTITION, "127.0.251.21", 8080)
    assert stats.enabled_state == "disabled" and stats.availability == "available"  # still serving its connections
    assert "user disabled" in stats.reason
    assert 0 < client.member_connections(pool, PARTITION, "127.0.251.21", 8080) <= 4
    time.sleep(0.6)  # 4 connections at 8 a second: gone
    assert client.member_connections(pool, PARTITION, "127.0.251.21", 8080) == 0

    state = client.force_member_offline(pool, PARTITION, "127.0.251.21", 8080)
    assert (state.session, state.state) == ("user-disabled", "user-down")
    assert client.member_state(pool, PARTITION, "127.0.251.21", 8080).availability == "offline"

    state = client.enable_member(pool, PARTITION, "127.0.251.21", 8080)
    assert state.session == "user-enabled" and state.state == "up" and state.up
    bodies = [c["body"] for c in control.calls(method="PATCH")]
    assert bodies == [
        '{"session": "user-disabled"}',
        '{"session": "user-disabled", "state": "user-down"}',
        '{"session": "user-enabled", "state": "user-up"}',
    ]


def test_member_that_never_drains_and_a_missing_member(client, control, pool):
    client.add_member(pool, PARTITION, "127.0.251.22", 8080)
    control.set_member_connections(pool, "127.0.251.22:8080", 3, decay_per_second=100, never_drain=True)
    client.disable_member(pool, PARTITION, "127.0.251.22", 8080)
    time.sleep(0.2)
    assert client.member_connections(pool, PARTITION, "127.0.251.22", 8080) == 3
    with pytest.raises(IntegrationError) as missing:
        client.disable_member(pool, PARTITION, "127.0.251.99", 8080)
    assert missing.value.code == "not_found" and missing.value.permanent
