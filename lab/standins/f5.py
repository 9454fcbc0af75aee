"""F5 BIG-IP stand-in: the iControl REST subset the portal uses, in memory, plain HTTP on a loopback port.

    python -m lab.standins.f5 --port 18443 --user admin      (password in $F5_STANDIN_PASSWORD)

Protocol, shaped like BIG-IP 15.1's answers (`selfLink`s on https://localhost, error bodies with code/message):
    POST   /mgmt/shared/authn/login {username, password, loginProviderName: "tmos"} -> {token: {token, ...}}
    DELETE /mgmt/shared/authz/tokens/TOKEN
    every /mgmt/tm/ call needs a valid X-F5-Auth-Token header (else 401)
    GET/POST /mgmt/tm/ltm/node,  GET/DELETE /mgmt/tm/ltm/node/~Part~name   (a node in use by a member: 400)
    GET/POST /mgmt/tm/ltm/pool,  GET/DELETE /mgmt/tm/ltm/pool/~Part~pool
    GET/POST /mgmt/tm/ltm/pool/~Part~pool/members     create {name: "addr:port", address, partition}; a member
             whose node does not exist creates it, named by what is left of ":port" (as BIG-IP does)
    GET/PATCH/DELETE .../members/~Part~addr:port      PATCH {"session": "user-enabled"|"user-disabled",
             "state": "user-up"|"user-down"} (BIG-IP's values; anything else: 400 "invalid property value")
    GET    .../members/~Part~addr:port/stats          monitorStatus, status.availabilityState,
             status.enabledState, status.statusReason, serverside.curConns, ... (nestedStats entries)

A member's `state` (with `session` "monitor-enabled"): "unchecked" in a pool without a monitor; otherwise
"checking" for `up_delay` seconds after it was added, then `default_state` ("up"), unless the address has a state
in `address_states` or the control API forced one. The session and state set by PATCH show in the stats as BIG-IP
shows them: disabled (session user-disabled) is `status.enabledState` "disabled" with the availability unchanged;
forced offline (state user-down) is availability "offline". A member's current connections (`serverside.curConns`)
are 0 unless the control API sets them. While the member is enabled they hold (new connections replace those that
end); from the moment it is disabled or forced offline they fall by `decay_per_second` (linearly, to 0), unless
`never_drain` (connections that never end, for a drain timeout).

Control API (no auth), besides the common one in lab/standins/http_base.py:
    POST /_lab/config  {"up_delay": 0.5, "default_state": "up", "address_states": {"127.0.100.5": "down"},
                        "refuse_login": false, "token_ttl": 1200}
    POST /_lab/pools   {"name": "web", "partition": "Common", "monitor": "/Common/tcp"}   (idempotent)
    POST /_lab/member-state {"pool", "partition", "member": "addr:port", "state": "up"|"down"|null}
    POST /_lab/member-connections {"pool", "partition", "member": "addr:port", "connections": 40,
                        "decay_per_second": 20, "never_drain": false}    (the member's serverside.curConns)
    POST /_lab/expire-tokens                          every issued token becomes invalid (client must log in again)
    GET  /_lab/state                                  pools, members (with their current state and
                                                      connections), nodes, and `removed`: each member DELETE
                                                      with the member's session, state and connections then
    POST /_lab/reset {"scope": "all"}                 also forgets pools, nodes, tokens and config
"""

import ipaddress
import os
import secrets
import string
import threading
import time

from lab.standins.http_base import App, Response, base_arguments, json_response, serve

VERSION = "15.1.10"
SELF = "https://localhost"
DEFAULT_CONFIG = {
    "up_delay": 0.5,
    "default_state": "up",
    "address_states": {},
    "refuse_login": False,
    "token_ttl": 1200,
}
MEMBER_STATES = ("up", "down", "user-down", "unchecked", "checking")
# What a PATCH may set (BIG-IP answers 400 "invalid property value" to anything else, e.g. "state": "up").
PATCH_VALUES = {"session": ("user-enabled", "user-disabled"), "state": ("user-up", "user-down")}


class F5Error(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def split_full_name(ref):
    """ "~Common~web" or "/Common/web" or "web" -> ("Common", "web")."""
    if ref.startswith("~"):
        partition, _, name = ref[1:].partition("~")
        return partition, name
    if ref.startswith("/"):
        partition, _, name = ref[1:].partition("/")
        return partition, name
    return "Common", ref


class Member:
    def __init__(self, name, address, partition):
        self.name = name
        self.address = address
        self.partition = partition
        self.created = time.monotonic()
        self.forced_state = None
        self.session = "monitor-enabled"
        self.user_down = False
        self.connections = 0
        self.connections_at = time.monotonic()
        self.decay_per_second = 0.0
        self.never_drain = False

    @property
    def draining(self):
        """Disabled or forced offline: no new connection comes, the existing ones end one by one."""
        return self.session == "user-disabled" or self.user_down

    def current_connections(self):
        if self.never_drain or not self.connections or not self.draining:
            return self.connections  # while enabled, new connections replace those that end
        left = self.connections - self.decay_per_second * (time.monotonic() - self.connections_at)
        return max(0, int(-(-left // 1)))  # rounded up: a connection ends when its last part has

    def set_access(self, *, session=None, user_down=None):
        """A PATCH: the connections left at this moment go on falling (draining) or hold (enabled) from now."""
        self.connections = self.current_connections()
        self.connections_at = time.monotonic()
        if session is not None:
            self.session = session
        if user_down is not None:
            self.user_down = user_down

    @property
    def node_name(self):
        return self.name.rsplit(":", 1)[0]

    @property
    def port(self):
        return int(self.name.rsplit(":", 1)[1])


class F5App(App):
    server_header = "f5-standin"

    def __init__(self, user, password):
        super().__init__()
        self.user = user
        self.password = password
        self.lock = threading.RLock()
        self.operation_id = 0
        self._clear()

    def _clear(self):
        self.config = {**DEFAULT_CONFIG, "address_states": {}}
        self.tokens = {}
        self.pools = {}  # (partition, name) -> {"monitor": str, "lb": str, "members": {name: Member}}
        self.nodes = {}  # (partition, name) -> address
        self.removed = []  # each member DELETE: what the member was at that moment

    def reset(self, scope):
        with self.lock:
            self._clear()

    def extra_headers(self):
        return {"Server": "Jetty(9.2.22.v20170606)", "X-Frame-Options": "SAMEORIGIN"}

    def recorded_body(self, request):
        if request.path.endswith("/authn/login"):
            return '{"password": "****"}'
        return super().recorded_body(request)

    def fault_response(self, status):
        return self._error(status, f"injected fault: HTTP {status}")

    def _error(self, status, message):
        with self.lock:
            self.operation_id += 1
            op = self.operation_id
        body = {"code": status, "message": message, "errorStack": [], "apiError": 3}
        if status == 401:
            body = {
                "code": 401,
                "message": message,
                "referer": "127.0.0.1",
                "restOperationId": op,
                "kind": ":resterrorresponse",
            }
        return json_response(body, status)

    # --- protocol ------------------------------------------------------------------------------------------
    def handle(self, request):
        seg = request.segments
        try:
            if seg[:3] == ["mgmt", "shared", "authn"] and seg[3:] == ["login"] and request.method == "POST":
                return self._login(request)
            if seg[:4] == ["mgmt", "shared", "authz", "tokens"] and len(seg) == 5 and request.method == "DELETE":
                with self.lock:
                    self.tokens.pop(seg[4], None)
                return json_response({})
            if seg[:2] == ["mgmt", "tm"]:
                token = request.headers.get("x-f5-auth-token")
                if not token:
                    return self._error(401, "X-F5-Auth-Token does not exist.")
                with self.lock:
                    expires = self.tokens.get(token)
                if expires is None or expires < time.time():
                    return self._error(401, "X-F5-Auth-Token is invalid or expired.")
                if seg[2:4] == ["ltm", "node"]:
                    return self._node(request, seg[4:])
                if seg[2:4] == ["ltm", "pool"]:
                    return self._pool(request, seg[4:])
            return self._error(404, f"Public URI path not registered: {request.path}")
        except F5Error as exc:
            return self._error(exc.status, exc.message)
        except ValueError as exc:
            return self._error(400, f"Found invalid JSON body in the request: {exc}")

    def _login(self, request):
        body = request.json()
        credentials_ok = body.get("username") == self.user and body.get("password") == self.password
        if self.config["refuse_login"] or not credentials_ok:
            return self._error(401, "Authentication failed.")
        token = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(26))
        ttl = int(self.config["token_ttl"])
        with self.lock:
            self.tokens[token] = time.time() + ttl
        now_us = int(time.time() * 1_000_000)
        return json_response(
            {
                "username": self.user,
                "loginReference": {"link": f"{SELF}/mgmt/cm/system/authn/providers/tmos/1/login"},
                "loginProviderName": body.get("loginProviderName", "tmos"),
                "token": {
                    "token": token,
                    "name": token,
                    "userName": self.user,
                    "authProviderName": "tmos",
                    "user": {"link": f"{SELF}/mgmt/shared/authz/users/{self.user}"},
                    "timeout": ttl,
                    "address": "127.0.0.1",
                    "partition": "[All]",
                    "generation": 1,
                    "lastUpdateMicros": now_us,
                    "expirationMicros": now_us + ttl * 1_000_000,
                    "kind": "shared:authz:tokens:authtokenitemstate",
                    "selfLink": f"{SELF}/mgmt/shared/authz/tokens/{token}",
                },
                "generation": 0,
                "lastUpdateMicros": 0,
            }
        )

    # nodes
    def _node_json(self, partition, name):
        address = self.nodes[(partition, name)]
        return {
            "kind": "tm:ltm:node:nodestate",
            "name": name,
            "partition": partition,
            "fullPath": f"/{partition}/{name}",
            "generation": 1,
            "selfLink": f"{SELF}/mgmt/tm/ltm/node/~{partition}~{name}?ver={VERSION}",
            "address": address,
            "connectionLimit": 0,
            "dynamicRatio": 1,
            "ephemeral": "false",
            "fqdn": {"autopopulate": "disabled"},
            "logging": "disabled",
            "monitor": "default",
            "rateLimit": "disabled",
            "ratio": 1,
            "session": "user-enabled",
            "state": "unchecked",
        }

    def _node(self, request, rest):
        if not rest:
            if request.method == "GET":
                with self.lock:
                    items = [self._node_json(p, n) for (p, n) in self.nodes]
                return json_response(
                    {
                        "kind": "tm:ltm:node:nodecollectionstate",
                        "selfLink": f"{SELF}/mgmt/tm/ltm/node?ver={VERSION}",
                        "items": items,
                    }
                )
            if request.method == "POST":
                body = request.json()
                partition, name = self._name_in_body(body)
                address = body.get("address")
                if not address:
                    raise F5Error(400, "01070734:3: Configuration error: A node must have an address.")
                self._check_address(address)
                with self.lock:
                    self._create_node(partition, name, address)
                    return json_response(self._node_json(partition, name))
        elif len(rest) == 1:
            partition, name = split_full_name(rest[0])
            with self.lock:
                if (partition, name) not in self.nodes:
                    raise F5Error(404, f"01020036:3: The requested Node (/{partition}/{name}) was not found.")
                if request.method == "GET":
                    return json_response(self._node_json(partition, name))
                if request.method == "DELETE":
                    for (pool_partition, pool_name), pool in self.pools.items():
                        for member in pool["members"].values():
                            if member.partition == partition and member.node_name == name:
                                raise F5Error(
                                    400,
                                    f"01070110:3: Node address '/{partition}/{name}' is referenced "
                                    f"by a member of pool '/{pool_partition}/{pool_name}'.",
                                )
                    del self.nodes[(partition, name)]
                    return Response(200, b"")
        raise F5Error(405, f"Method {request.method} not allowed on {request.path}")

    @staticmethod
    def _name_in_body(body):
        name = body.get("name")
        if not name:
            raise F5Error(400, "The name field is required.")
        partition, name = split_full_name(name)
        return body.get("partition") or partition, name

    @staticmethod
    def _check_address(address):
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise F5Error(400, f'01070734:3: Configuration error: invalid IP address "{address}"') from exc

    def _create_node(self, partition, name, address):
        if (partition, name) in self.nodes:
            raise F5Error(
                409, f"01020066:3: The requested Node (/{partition}/{name}) already exists in partition {partition}."
            )
        for (other_partition, other), other_address in self.nodes.items():
            if other_address == address and other_partition == partition:
                raise F5Error(
                    409,
                    f"01020066:3: The requested Node (/{partition}/{other} {address}) already "
                    f"exists in partition {partition}.",
                )
        self.nodes[(partition, name)] = address

    # pools
    def _pool_json(self, key):
        partition, name = key
        pool = self.pools[key]
        return {
            "kind": "tm:ltm:pool:poolstate",
            "name": name,
            "partition": partition,
            "fullPath": f"/{partition}/{name}",
            "generation": 1,
            "selfLink": f"{SELF}/mgmt/tm/ltm/pool/~{partition}~{name}?ver={VERSION}",
            "allowNat": "yes",
            "allowSnat": "yes",
            "ignorePersistedWeight": "disabled",
            "loadBalancingMode": pool["lb"],
            "minActiveMembers": 0,
            "minUpMembers": 0,
            "minUpMembersAction": "failover",
            "minUpMembersChecking": "disabled",
            "monitor": pool["monitor"],
            "queueDepthLimit": 0,
            "queueOnConnectionLimit": "disabled",
            "queueTimeLimit": 0,
            "reselectTries": 0,
            "serviceDownAction": "none",
            "slowRampTime": 10,
            "membersReference": {
                "link": f"{SELF}/mgmt/tm/ltm/pool/~{partition}~{name}/members?ver={VERSION}",
                "isSubcollection": True,
            },
        }

    def create_pool(self, partition, name, monitor="/Common/tcp", lb="round-robin", exist_ok=False):
        with self.lock:
            if (partition, name) in self.pools:
                if exist_ok:
                    return
                raise F5Error(
                    409,
                    f"01020066:3: The requested Pool (/{partition}/{name}) already exists in partition {partition}.",
                )
            self.pools[(partition, name)] = {"monitor": monitor, "lb": lb, "members": {}}

    def _pool(self, request, rest):
        if not rest:
            if request.method == "GET":
                with self.lock:
                    items = [self._pool_json(key) for key in self.pools]
                return json_response(
                    {
                        "kind": "tm:ltm:pool:poolcollectionstate",
                        "selfLink": f"{SELF}/mgmt/tm/ltm/pool?ver={VERSION}",
                        "items": items,
                    }
                )
            if request.method == "POST":
                body = request.json()
                partition, name = self._name_in_body(body)
                self.create_pool(partition, name, body.get("monitor", ""), body.get("loadBalancingMode", "round-robin"))
                with self.lock:
                    return json_response(self._pool_json((partition, name)))
            raise F5Error(405, f"Method {request.method} not allowed on {request.path}")
        key = split_full_name(rest[0])
        with self.lock:
            pool = self.pools.get(key)
            if pool is None:
                raise F5Error(404, f"01020036:3: The requested Pool (/{key[0]}/{key[1]}) was not found.")
            if len(rest) == 1:
                if request.method == "GET":
                    return json_response(self._pool_json(key))
                if request.method == "DELETE":
                    del self.pools[key]
                    return Response(200, b"")
            elif rest[1] == "members":
                return self._members(request, key, pool, rest[2:])
        raise F5Error(405, f"Method {request.method} not allowed on {request.path}")

    # members
    def member_state(self, pool, member):
        if member.user_down:
            return "user-down"
        if member.forced_state:
            return member.forced_state
        if not pool["monitor"].strip():
            return "unchecked"
        if time.monotonic() - member.created < float(self.config["up_delay"]):
            return "checking"
        return self.config["address_states"].get(member.address, self.config["default_state"])

    def _member_json(self, key, pool, member):
        partition, name = key
        base = f"{SELF}/mgmt/tm/ltm/pool/~{partition}~{name}/members/~{member.partition}~{member.name}"
        return {
            "kind": "tm:ltm:pool:members:membersstate",
            "name": member.name,
            "partition": member.partition,
            "fullPath": f"/{member.partition}/{member.name}",
            "generation": 1,
            "selfLink": f"{base}?ver={VERSION}",
            "address": member.address,
            "connectionLimit": 0,
            "dynamicRatio": 1,
            "ephemeral": "false",
            "fqdn": {"autopopulate": "disabled"},
            "inheritProfile": "enabled",
            "logging": "disabled",
            "monitor": "default",
            "priorityGroup": 0,
            "rateLimit": "disabled",
            "ratio": 1,
            "session": member.session,
            "state": self.member_state(pool, member),
        }

    def _members(self, request, key, pool, rest):
        partition, pool_name = key
        if not rest:
            if request.method == "GET":
                items = [self._member_json(key, pool, m) for m in pool["members"].values()]
                return json_response(
                    {
                        "kind": "tm:ltm:pool:members:memberscollectionstate",
                        "selfLink": f"{SELF}/mgmt/tm/ltm/pool/~{partition}~{pool_name}/members?ver={VERSION}",
                        "items": items,
                    }
                )
            if request.method == "POST":
                return self._add_member(request.json(), key, pool)
            raise F5Error(405, f"Method {request.method} not allowed on {request.path}")
        member_partition, member_name = split_full_name(rest[0])
        member = pool["members"].get(member_name)
        if member is None or member.partition != member_partition:
            node, _, port = member_name.rpartition(":")
            raise F5Error(
                404,
                f"01020036:3: The requested Pool Member (/{partition}/{pool_name} "
                f"/{member_partition}/{node} {port}) was not found.",
            )
        if len(rest) == 1:
            if request.method == "GET":
                return json_response(self._member_json(key, pool, member))
            if request.method == "DELETE":
                self.removed.append(
                    {
                        "pool": f"/{partition}/{pool_name}",
                        "member": member_name,
                        "session": member.session,
                        "state": self.member_state(pool, member),
                        "connections": member.current_connections(),
                        "time": time.time(),
                    }
                )
                del pool["members"][member_name]
                return Response(200, b"")
            if request.method in ("PATCH", "PUT"):
                body = request.json()
                for field, allowed in PATCH_VALUES.items():
                    if field in body and body[field] not in allowed:
                        raise F5Error(400, f'invalid property value "{field}":"{body[field]}"')
                member.set_access(
                    session=body.get("session"), user_down=body["state"] == "user-down" if "state" in body else None
                )
                return json_response(self._member_json(key, pool, member))
        elif rest[1:] == ["stats"] and request.method == "GET":
            return json_response(self._member_stats(key, pool, member))
        raise F5Error(405, f"Method {request.method} not allowed on {request.path}")

    def _add_member(self, body, key, pool):
        partition, pool_name = key
        member_partition, name = self._name_in_body(body)
        node_name, _, port = name.rpartition(":")
        if not node_name or not port.isdigit() or not 0 < int(port) < 65536:
            raise F5Error(400, f'01070587:3: The requested pool member name "{name}" must be "node:port".')
        address = body.get("address")
        existing = self.nodes.get((member_partition, node_name))
        if existing is not None:
            if address and address != existing:
                raise F5Error(
                    400,
                    f"0107003a:3: Pool member node (/{member_partition}/{node_name}) and "
                    f"address ({address}) do not match the node's address ({existing}).",
                )
            address = existing
        else:
            address = address or node_name
            self._check_address(address)
            self._create_node(member_partition, node_name, address)
        if name in pool["members"]:
            raise F5Error(
                409,
                f"01020066:3: The requested Pool Member (/{partition}/{pool_name} "
                f"/{member_partition}/{node_name} {port}) already exists in partition {partition}.",
            )
        member = Member(name, address, member_partition)
        pool["members"][name] = member
        return json_response(self._member_json(key, pool, member))

    def _member_stats(self, key, pool, member):
        partition, pool_name = key
        state = self.member_state(pool, member)
        availability = {"up": "available", "down": "offline", "user-down": "offline"}.get(state, "unknown")
        reason = {
            "up": "Pool member is available",
            "down": "Pool member has been marked down by a monitor",
            "user-down": "Pool member has been forced down by user",
            "checking": "Pool member is being checked",
        }.get(state, "Pool member does not have service checking enabled")
        if member.session == "user-disabled" and state != "user-down":
            reason += ", user disabled"
        base = f"{SELF}/mgmt/tm/ltm/pool/~{partition}~{pool_name}/members/~{member.partition}~{member.name}"
        entries = {
            "addr": {"description": member.address},
            "monitorStatus": {"description": state},
            "nodeName": {"description": f"/{member.partition}/{member.node_name}"},
            "poolName": {"description": f"/{partition}/{pool_name}"},
            "port": {"value": member.port},
            "sessionStatus": {"description": "enabled" if member.session != "user-disabled" else "disabled"},
            "status.availabilityState": {"description": availability},
            "status.enabledState": {"description": "disabled" if member.session == "user-disabled" else "enabled"},
            "status.statusReason": {"description": reason},
            "serverside.curConns": {"value": member.current_connections()},
            "serverside.maxConns": {"value": member.connections},
        }
        return {
            "kind": "tm:ltm:pool:members:membersstats",
            "selfLink": f"{base}/stats?ver={VERSION}",
            "entries": {f"{base}/~{member.partition}~{member.name}/stats": {"nestedStats": {"entries": entries}}},
        }

    # --- control -------------------------------------------------------------------------------------------
    def control(self, request):
        seg = request.segments[1:]
        if request.method == "POST" and seg == ["config"]:
            body = request.json()
            unknown = set(body) - set(DEFAULT_CONFIG)
            if unknown:
                raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
            with self.lock:
                self.config.update(body)
                return json_response(self.config)
        if request.method == "POST" and seg == ["pools"]:
            body = request.json()
            self.create_pool(
                body.get("partition", "Common"), body["name"], body.get("monitor", "/Common/tcp"), exist_ok=True
            )
            return json_response({"ok": True})
        if request.method == "POST" and seg == ["member-state"]:
            body = request.json()
            state = body.get("state")
            if state is not None and state not in MEMBER_STATES:
                raise ValueError(f"state must be one of {', '.join(MEMBER_STATES)} or null")
            with self.lock:
                pool = self.pools.get((body.get("partition", "Common"), body["pool"]))
                member = pool["members"].get(body["member"]) if pool else None
                if member is None:
                    return json_response({"error": "no such pool member"}, 404)
                member.forced_state = state
            return json_response({"ok": True})
        if request.method == "POST" and seg == ["member-connections"]:
            body = request.json()
            connections = body.get("connections", 0)
            if not isinstance(connections, int) or connections < 0:
                raise ValueError("connections must be a whole number >= 0")
            with self.lock:
                pool = self.pools.get((body.get("partition", "Common"), body["pool"]))
                member = pool["members"].get(body["member"]) if pool else None
                if member is None:
                    return json_response({"error": "no such pool member"}, 404)
                member.connections = connections
                member.connections_at = time.monotonic()
                member.decay_per_second = float(body.get("decay_per_second") or 0)
                member.never_drain = bool(body.get("never_drain"))
            return json_response({"ok": True})
        if request.method == "POST" and seg == ["expire-tokens"]:
            with self.lock:
                self.tokens.clear()
            return json_response({"ok": True})
        if request.method == "GET" and seg == ["state"]:
            with self.lock:
                pools = {
                    f"/{p}/{n}": {
                        "monitor": pool["monitor"],
                        "members": {
                            m.name: {
                                "address": m.address,
                                "partition": m.partition,
                                "session": m.session,
                                "state": self.member_state(pool, m),
                                "connections": m.current_connections(),
                            }
                            for m in pool["members"].values()
                        },
                    }
                    for (p, n), pool in self.pools.items()
                }
                nodes = {f"/{p}/{n}": address for (p, n), address in self.nodes.items()}
                return json_response(
                    {
                        "pools": pools,
                        "nodes": nodes,
                        "tokens": len(self.tokens),
                        "config": self.config,
                        "removed": list(self.removed),
                    }
                )
        return None


def main(argv=None):
    parser = base_arguments("F5 BIG-IP iControl REST stand-in for the lab")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--pool", action="append", default=[], help="create PARTITION/POOL at start")
    args = parser.parse_args(argv)
    password = os.environ.get("F5_STANDIN_PASSWORD")
    if not password:
        raise SystemExit("f5 stand-in: set F5_STANDIN_PASSWORD to the password to accept")
    app = F5App(args.user, password)
    for spec in args.pool:
        partition, _, name = spec.rpartition("/")
        app.create_pool(partition or "Common", name)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
