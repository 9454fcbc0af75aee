"""The F5 BIG-IP stand-in (lab/standins/f5.py) on a free loopback port (plain HTTP), with a fresh password.

`F5StandinControl(info["control_url"])` drives its control API from tests (plain urllib, no Django).
"""

import json
import secrets
import urllib.parse
import urllib.request

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


class F5StandinControl:
    """Test-side helper for the F5 stand-in's /_lab/ control API."""

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/") + "/"

    def _call(self, method, path, data=None):
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.base_url + "_lab/" + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def calls(self, *, path_contains=None, method=None):
        """Recorded protocol calls: dicts with method, path, params, status, note, body, headers, time, seq."""
        return [
            call
            for call in self._call("GET", "calls")
            if (path_contains is None or path_contains in call["path"]) and (method is None or call["method"] == method)
        ]

    def reset(self, *, everything=False):
        """Forget calls and faults; with everything=True also pools, nodes, tokens and config."""
        self._call("POST", "reset", {"scope": "all" if everything else "calls"})

    def fail_next(self, count=1, status=503, *, path=None, method=None):
        """The next `count` matching requests answer `status` (count=None: until clear_faults)."""
        self._call(
            "POST", "faults", {"kind": "status", "status": status, "count": count, "path": path, "method": method}
        )

    def delay_next(self, seconds, count=1, *, path=None, method=None, status=None):
        spec = {"kind": "delay", "seconds": seconds, "count": count, "path": path, "method": method, "status": status}
        self._call("POST", "faults", spec)

    def drop_next(self, count=1, *, path=None, method=None):
        self._call("POST", "faults", {"kind": "drop", "count": count, "path": path, "method": method})

    def clear_faults(self):
        self._call("DELETE", "faults")

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

    def expire_tokens(self):
        self._call("POST", "expire-tokens", {})

    def state(self):
        """{"pools": {"/Part/pool": {"monitor", "members": {name: {address, state, ...}}}}, "nodes": {...}, ...}"""
        return self._call("GET", "state")

    def members(self, pool, *, partition=DEFAULT_PARTITION):
        return self.state()["pools"].get(f"/{partition}/{urllib.parse.unquote(pool)}", {}).get("members", {})
