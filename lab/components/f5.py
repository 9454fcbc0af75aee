"""The F5 BIG-IP stand-in (lab/standins/f5.py) on a free loopback port (plain HTTP), with a fresh password.

`F5StandinControl(info["control_url"])` drives its control API from tests (plain urllib, no Django).
"""

import secrets
import urllib.parse
import urllib.request

from lab.components.control import StandinControl
from lab.core import ROOT, free_port

NAME = "f5"
REQUIRES = ()
USER = "admin"
DEFAULT_PARTITION = "Common"
DEFAULT_POOL = "autoscale_lab"


def start(lab):
    port = free_port()
    password = secrets.token_urlsafe(18)
    argv = lab.python_argv(
        "lab.standins.f5", "--port", str(port), "--user", USER, "--pool", f"{DEFAULT_PARTITION}/{DEFAULT_POOL}"
    )
    pid = lab.spawn(NAME, argv, env={"F5_STANDIN_PASSWORD": password}, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    lab.wait_http(NAME, f"{url}/_lab/health", pid=pid, timeout=15)
    return {
        "pids": [pid],
        "url": url,
        "control_url": url,
        "user": USER,
        "password": password,
        "partition": DEFAULT_PARTITION,
        "pool": DEFAULT_POOL,
        "health_url": f"{url}/_lab/health",
        "summary": f"F5 stand-in at {url} (user {USER}, pool /{DEFAULT_PARTITION}/{DEFAULT_POOL})",
        "env": {"F5_URL": url, "F5_USER": USER, "F5_PASSWORD": password, "F5_VERIFY_TLS": "false"},
    }


class F5StandinControl(StandinControl):
    """Test-side helper for the F5 stand-in's /_lab/ control API."""

    def configure(self, **config):
        """up_delay, default_state, address_states, refuse_login, token_ttl."""
        return self._call("POST", "config", config)

    def refuse_login(self, refuse=True):
        self.configure(refuse_login=refuse)

    def create_pool(self, name, *, partition=DEFAULT_PARTITION, monitor="/Common/tcp"):
        self._call("POST", "pools", {"name": name, "partition": partition, "monitor": monitor})

    def set_member_state(self, pool, member, state, *, partition=DEFAULT_PARTITION):
        """Force member "addr:port" to "up"/"down"/...; None goes back to the monitor's verdict."""
        self._call("POST", "member-state", {"pool": pool, "partition": partition, "member": member, "state": state})

    def set_member_connections(
        self, pool, member, connections, *, decay_per_second=0, never_drain=False, partition=DEFAULT_PARTITION
    ):
        """Give member "addr:port" `connections` current connections, falling by `decay_per_second` (or never)."""
        body = {"pool": pool, "partition": partition, "member": member, "connections": connections}
        self._call(
            "POST", "member-connections", {**body, "decay_per_second": decay_per_second, "never_drain": never_drain}
        )

    def removed(self, pool=None, *, partition=DEFAULT_PARTITION):
        """Each member DELETE the stand-in answered (pool, member, session, state, connections, time)."""
        removed = self.state()["removed"]
        return [r for r in removed if pool is None or r["pool"] == f"/{partition}/{urllib.parse.unquote(pool)}"]

    def expire_tokens(self):
        self._call("POST", "expire-tokens", {})

    def state(self):
        """{"pools": {"/Part/pool": {"monitor", "members": {name: {address, state, ...}}}}, "nodes": {...}, ...}"""
        return self._call("GET", "state")

    def members(self, pool, *, partition=DEFAULT_PARTITION):
        return self.state()["pools"].get(f"/{partition}/{urllib.parse.unquote(pool)}", {}).get("members", {})
