"""Test-side client of a stand-in's /_lab/ control API: recorded calls and injected faults (see http_base)."""

import json
import urllib.request


class StandinControl:
    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/") + "/"

    def _call(self, method, path, data=None):
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.base_url + "_lab/" + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return json.loads(response.read() or b"null")

    def calls(self, *, path_contains=None, method=None):
        """Recorded protocol calls: dicts with method, path, params, status, note, body, headers, time, seq."""
        return [
            call
            for call in self._call("GET", "calls")
            if (path_contains is None or path_contains in call["path"]) and (method is None or call["method"] == method)
        ]

    def reset(self, *, everything=False):
        """Forget calls and faults; with everything=True also the stand-in's own state and configuration."""
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
        """The next `count` matching requests get their connection closed without an answer."""
        self._call("POST", "faults", {"kind": "drop", "count": count, "path": path, "method": method})

    def clear_faults(self):
        self._call("DELETE", "faults")
