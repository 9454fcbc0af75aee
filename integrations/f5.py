"""F5 BIG-IP through iControl REST (requests): token login, pools, nodes, pool members and their state.

Every call goes through `F5Client._request` on the shared HTTP transport (`integrations.http`: the session, TLS
verification, time-out, and the translation of HTTP failures), which logs in for a token (`X-F5-Auth-Token`), logs
in again once when BIG-IP answers 401 (an expired token), and turns every failure into
`IntegrationError(system="f5")`:

    code            permanent  when
    unauthorized    yes        the login was refused (or a fresh token was refused again)
    not_found       yes        no such pool, node or member (HTTP 404)
    conflict        yes        BIG-IP refused a change that clashes with its configuration (409)
    invalid         yes        BIG-IP refused the request (400, e.g. a node still used by a pool member)
    unreachable     no         no connection, TLS failure, connection closed without an answer
    timeout         no         no answer within the client's time-out
    server_error    no         BIG-IP answered 5xx
    not_up          no         `wait_member_up` ran out of time

A member's `session` and `state` are what BIG-IP's GUI shows as its status (iControl REST, tm:ltm:pool:members):
enabled is PATCH {"session": "user-enabled", "state": "user-up"}; disabled (existing connections continue, new
ones go to the other members) {"session": "user-disabled"}; forced offline {"session": "user-disabled", "state":
"user-down"}. A read shows the monitor's verdict in `state` ("up", "down", "unchecked", ...) or "user-down". The
member's `.../stats` holds `serverside.curConns` (its current server-side connections) among its nestedStats.

Names are BIG-IP's: a pool `/Partition/pool`, a member `node:port` whose node is named by the address unless a
`node_name` is given.
"""

import time
from dataclasses import dataclass
from urllib.parse import quote

from integrations.errors import IntegrationError
from integrations.http import HttpApiClient

SYSTEM = "f5"
UP_STATES = ("up", "unchecked")  # "unchecked": the pool has no monitor, BIG-IP sends traffic to it


@dataclass(frozen=True)
class PoolInfo:
    name: str
    partition: str
    full_path: str
    monitor: str
    load_balancing_mode: str


@dataclass(frozen=True)
class MemberState:
    name: str  # "node:port"
    partition: str
    address: str
    port: int
    state: str  # up, down, checking, unchecked, user-down
    session: str  # monitor-enabled, user-enabled, user-disabled
    monitor_status: str | None = None  # from the member's stats, when read
    availability: str | None = None  # available, offline, unknown (stats)
    reason: str | None = None  # BIG-IP's status reason (stats)
    enabled_state: str | None = None  # enabled, disabled (stats: status.enabledState)
    current_connections: int | None = None  # stats: serverside.curConns

    @property
    def up(self):
        return self.state in UP_STATES and self.session != "user-disabled"


def member_name(address, port, node_name=None):
    node = node_name or address
    separator = "." if ":" in node else ":"  # IPv6 members are "addr.port" on BIG-IP
    return f"{node}{separator}{int(port)}"


class F5Client(HttpApiClient):
    SYSTEM = SYSTEM
    PRODUCT = "F5"
    TLS_HINT = "set F5_VERIFY_TLS=false only for a self-signed lab device"

    def __init__(self, url, user, password, verify_tls=True, timeout=10.0):
        super().__init__(url, timeout, verify_tls=verify_tls, headers={"Content-Type": "application/json"})
        self.url = self.base_url
        self.user = user
        self._password = password
        self._token = None

    def close(self):
        """Give the token back (BIG-IP limits tokens per user) and close the session."""
        if self._token:
            try:
                self._send("DELETE", f"/mgmt/shared/authz/tokens/{self._token}", what="logging out")
            except IntegrationError:
                pass  # the token expires by itself
            self._token = None
        super().close()

    def _login(self):
        body = {"username": self.user, "password": self._password, "loginProviderName": "tmos"}
        response = self._send("POST", "/mgmt/shared/authn/login", what=f"logging in as {self.user}", json=body)
        if response.status_code in (400, 401, 403):
            raise IntegrationError(
                f"F5 at {self.url} refused the login for user {self.user} (HTTP {response.status_code}: "
                f"{_message(response)}); check F5_USER and F5_PASSWORD.",
                system=SYSTEM,
                permanent=True,
                code="unauthorized",
            )
        data = self._json(response, f"logging in as {self.user}")
        token = (data.get("token") or {}).get("token")
        if not token:
            raise IntegrationError(
                f"F5 at {self.url} answered the login without a token.", system=SYSTEM, code="server_error"
            )
        self._token = token

    def _request(self, method, path, doing, *, body=None, missing=None):
        """JSON of a /mgmt/tm call; `missing` names what a 404 means."""
        for attempt in (1, 2):
            if self._token is None:
                self._login()
            response = self._send(method, path, what=doing, json=body, headers={"X-F5-Auth-Token": self._token})
            if response.status_code != 401:
                break
            self._token = None  # expired or revoked: log in again, once
            if attempt == 2:
                raise IntegrationError(
                    f"F5 at {self.url} refused a fresh token for user {self.user} while {doing} "
                    f"({_message(response)}).",
                    system=SYSTEM,
                    permanent=True,
                    code="unauthorized",
                )
        return self._json(response, doing, missing=missing)

    def _json(self, response, doing, *, missing=None):
        if response.status_code >= 400:
            raise self._status_error(response, what=doing, detail=_message(response), missing=missing or "such object")
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise IntegrationError(
                f"F5 at {self.url} sent an answer that is not JSON while {doing}.", system=SYSTEM, code="server_error"
            ) from exc

    # --- pools ---------------------------------------------------------------------------------------------
    def get_pool(self, pool, partition="Common"):
        data = self._request(
            "GET", _pool_path(pool, partition), f"reading pool /{partition}/{pool}", missing=f"pool /{partition}/{pool}"
        )
        return PoolInfo(
            name=data.get("name", pool),
            partition=data.get("partition", partition),
            full_path=data.get("fullPath", f"/{partition}/{pool}"),
            monitor=(data.get("monitor") or "").strip(),
            load_balancing_mode=data.get("loadBalancingMode", ""),
        )

    def pool_exists(self, pool, partition="Common"):
        try:
            self.get_pool(pool, partition)
        except IntegrationError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    # --- nodes ---------------------------------------------------------------------------------------------
    def ensure_node(self, partition, name, address):
        """Create node /partition/name at address; "created" or "exists" (same address; else a conflict)."""
        path = f"/mgmt/tm/ltm/node/~{quote(partition)}~{quote(name)}"
        try:
            data = self._request("GET", path, f"reading node /{partition}/{name}", missing=f"node /{partition}/{name}")
        except IntegrationError as exc:
            if exc.code != "not_found":
                raise
            data = None
        if data is None:
            body = {"name": name, "partition": partition, "address": address}
            try:
                self._request("POST", "/mgmt/tm/ltm/node", f"creating node /{partition}/{name}", body=body)
                return "created"
            except IntegrationError as exc:
                if exc.code != "conflict":
                    raise
                # created meanwhile under this name (read it), or the address belongs to another node (refuse)
                try:
                    data = self._request(
                        "GET", path, f"reading node /{partition}/{name}", missing=f"node /{partition}/{name}"
                    )
                except IntegrationError:
                    raise exc from None
        if data.get("address") != address:
            raise IntegrationError(
                f"F5 node /{partition}/{name} exists with address {data.get('address')}, not {address}.",
                system=SYSTEM,
                permanent=True,
                code="conflict",
            )
        return "exists"

    def delete_node(self, partition, name):
        """Delete the node; False when it did not exist. A node still used by a pool member: invalid."""
        try:
            self._request(
                "DELETE",
                f"/mgmt/tm/ltm/node/~{quote(partition)}~{quote(name)}",
                f"deleting node /{partition}/{name}",
                missing=f"node /{partition}/{name}",
            )
        except IntegrationError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    # --- members -------------------------------------------------------------------------------------------
    def add_member(self, pool, partition, address, port, *, node_name=None):
        """Add address:port to the pool (an existing member is fine); returns its state."""
        name = member_name(address, port, node_name)
        body = {"name": name, "address": address, "partition": partition}
        try:
            self._request(
                "POST",
                f"{_pool_path(pool, partition)}/members",
                f"adding {name} to pool /{partition}/{pool}",
                body=body,
                missing=f"pool /{partition}/{pool}",
            )
        except IntegrationError as exc:
            if exc.code != "conflict" or "already exists" not in exc.message:
                raise
        return self.member_state(pool, partition, address, port, node_name=node_name, with_stats=False)

    def remove_member(self, pool, partition, address, port, *, node_name=None, delete_node=False):
        """Remove the member; False when it (or the pool) was not there.

        BIG-IP keeps the node a member created; `delete_node=True` also deletes it unless another pool member
        still uses it (a rollback that must leave nothing behind).
        """
        name = member_name(address, port, node_name)
        removed = True
        try:
            self._request(
                "DELETE",
                _member_path(pool, partition, name),
                f"removing {name} from pool /{partition}/{pool}",
                missing=f"member {name} in pool /{partition}/{pool}",
            )
        except IntegrationError as exc:
            if exc.code != "not_found":
                raise
            removed = False
        if delete_node:
            try:
                self.delete_node(partition, node_name or address)
            except IntegrationError as exc:
                if exc.code != "invalid":  # still referenced by another member: keep it
                    raise
        return removed

    def member_state(self, pool, partition, address, port, *, node_name=None, with_stats=True):
        name = member_name(address, port, node_name)
        path = _member_path(pool, partition, name)
        what = f"member {name} in pool /{partition}/{pool}"
        data = self._request("GET", path, f"reading {what}", missing=what)
        stats = {}
        if with_stats:
            try:
                raw = self._request("GET", f"{path}/stats", f"reading the stats of {what}", missing=what)
            except IntegrationError as exc:
                if exc.code != "not_found":
                    raise
            else:
                for entry in (raw.get("entries") or {}).values():
                    stats.update((entry.get("nestedStats") or {}).get("entries") or {})
        return _member_state(data, partition, stats)

    def _member_patch(self, pool, partition, address, port, body, doing, *, node_name=None):
        name = member_name(address, port, node_name)
        what = f"member {name} in pool /{partition}/{pool}"
        data = self._request("PATCH", _member_path(pool, partition, name), f"{doing} {what}", body=body, missing=what)
        return _member_state(data, partition, {})

    def disable_member(self, pool, partition, address, port, *, node_name=None):
        """Session user-disabled: the member keeps its connections, new ones go to the other members."""
        return self._member_patch(
            pool, partition, address, port, {"session": "user-disabled"}, "disabling", node_name=node_name
        )

    def force_member_offline(self, pool, partition, address, port, *, node_name=None):
        """State user-down (session user-disabled): BIG-IP sends the member nothing at all any more."""
        body = {"session": "user-disabled", "state": "user-down"}
        return self._member_patch(pool, partition, address, port, body, "forcing offline", node_name=node_name)

    def enable_member(self, pool, partition, address, port, *, node_name=None):
        """Back to enabled (session user-enabled, state user-up): the monitor decides again."""
        body = {"session": "user-enabled", "state": "user-up"}
        return self._member_patch(pool, partition, address, port, body, "enabling", node_name=node_name)

    def member_connections(self, pool, partition, address, port, *, node_name=None):
        """The member's current server-side connections (its stats' serverside.curConns)."""
        state = self.member_state(pool, partition, address, port, node_name=node_name)
        if state.current_connections is None:
            raise IntegrationError(
                f"F5 at {self.url} sent the stats of member {state.name} in /{partition}/{pool} without "
                "serverside.curConns.",
                system=SYSTEM,
                code="server_error",
            )
        return state.current_connections

    def list_members(self, pool, partition="Common"):
        data = self._request(
            "GET",
            f"{_pool_path(pool, partition)}/members",
            f"listing the members of pool /{partition}/{pool}",
            missing=f"pool /{partition}/{pool}",
        )
        return [_member_state(item, partition, {}) for item in data.get("items") or ()]

    def wait_member_up(self, pool, partition, address, port, *, node_name=None, timeout=60.0, interval=1.0):
        """Poll until BIG-IP reports the member up; IntegrationError(code="not_up") after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.member_state(pool, partition, address, port, node_name=node_name)
            if state.up:
                return state
            if time.monotonic() >= deadline:
                raise IntegrationError(
                    f"F5 pool member {state.name} in /{partition}/{pool} is not up after {timeout:g} s "
                    f"(state {state.state}, session {state.session}"
                    + (f": {state.reason}" if state.reason else "")
                    + ").",
                    system=SYSTEM,
                    code="not_up",
                )
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _pool_path(pool, partition):
    return f"/mgmt/tm/ltm/pool/~{quote(partition)}~{quote(pool)}"


def _member_path(pool, partition, name):
    return f"{_pool_path(pool, partition)}/members/~{quote(partition)}~{quote(name, safe=':.')}"


def _member_state(data, partition, stats):
    name = data.get("name", "")
    port = name.rsplit(":" if name.count(":") == 1 else ".", 1)[-1]

    def description(key):
        return (stats.get(key) or {}).get("description")

    return MemberState(
        name=name,
        partition=data.get("partition", partition),
        address=data.get("address", ""),
        port=int(port) if port.isdigit() else 0,
        state=data.get("state", ""),
        session=data.get("session", ""),
        monitor_status=description("monitorStatus"),
        availability=description("status.availabilityState"),
        reason=description("status.statusReason"),
        enabled_state=description("status.enabledState"),
        current_connections=_int((stats.get("serverside.curConns") or {}).get("value")),
    )


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _message(response):
    try:
        return str(response.json().get("message") or response.reason)
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason
