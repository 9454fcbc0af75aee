"""What the lab's HTTP stand-ins share: a threaded loopback server, a log of the calls it answered, injected faults.

A stand-in is an `App` with `handle(request) -> Response` (the real protocol) and `control(request) -> Response |
None` (its own `/_lab/...` endpoints). The server adds the common control API, which needs no authentication:

    GET    /_lab/health                       200 {"ok": true}
    GET    /_lab/calls                        recorded calls, oldest first (not the /_lab/ ones), each with the
                                              request line's target as an access log has it
    POST   /_lab/reset   {"scope": "calls" | "faults" | "all"}   default "calls": calls and faults
    POST   /_lab/faults  {"kind": "status" | "delay" | "drop", "status": 503, "seconds": 2.0, "count": 1,
                          "path": "regex", "method": "POST"}
    DELETE /_lab/faults

Faults apply to protocol requests in the order they were added; the first rule whose `path` regex (searched in the
request path) and `method` match is used and its `count` decremented (`count: null` = until cleared):
- "status": answer `status` (default 503) with a short error body;
- "delay": sleep `seconds`, then answer normally (or with `status` when given), so a client's time-out fires;
- "drop": close the connection without answering, as a crashed server or a reset connection would.
"""

import argparse
import base64
import contextlib
import ipaddress
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_CALLS = 10_000
MAX_RECORDED_BODY = 20_000


@dataclass
class Request:
    method: str
    path: str  # decoded path, without the query
    raw_path: str
    query: dict
    headers: dict
    body: bytes
    form: dict = field(default_factory=dict)

    @property
    def segments(self):
        return [unquote(part) for part in self.raw_path.split("?", 1)[0].strip("/").split("/") if part]

    def json(self):
        if not self.body:
            return {}
        return json.loads(self.body.decode("utf-8"))

    def basic_auth(self):
        """(user, secret) from an HTTP basic Authorization header, or None."""
        header = self.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            user, _, secret = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
            return user, secret
        return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json;charset=utf-8"
    headers: dict = field(default_factory=dict)
    note: str = ""  # recorded with the call (e.g. the authenticated user)


def json_response(data, status=200, headers=None):
    return Response(status, json.dumps(data).encode("utf-8"), headers=headers or {})


def text_response(text, status=200, content_type="text/plain;charset=utf-8", headers=None):
    return Response(status, text.encode("utf-8"), content_type=content_type, headers=headers or {})


class CallLog:
    def __init__(self):
        self._lock = threading.Lock()
        self._calls = []
        self._seq = 0

    def record(self, call):
        with self._lock:
            self._seq += 1
            call["seq"] = self._seq
            self._calls.append(call)
            del self._calls[:-MAX_CALLS]

    def list(self):
        with self._lock:
            return list(self._calls)

    def clear(self):
        with self._lock:
            self._calls.clear()


class Faults:
    KINDS = ("status", "delay", "drop")

    def __init__(self):
        self._lock = threading.Lock()
        self._rules = []

    def add(self, spec):
        kind = spec.get("kind", "status")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(self.KINDS)}")
        count = spec.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer or null")
        rule = {
            "kind": kind,
            "status": int(spec.get("status") or (503 if kind == "status" else 0)),
            "seconds": float(spec.get("seconds", 0)),
            "count": count,
            "path": re.compile(spec["path"]) if spec.get("path") else None,
            "method": (spec.get("method") or "").upper() or None,
        }
        with self._lock:
            self._rules.append(rule)

    def take(self, method, path):
        with self._lock:
            for rule in self._rules:
                if rule["method"] and rule["method"] != method:
                    continue
                if rule["path"] and not rule["path"].search(path):
                    continue
                if rule["count"] is not None:
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self._rules.remove(rule)
                return dict(rule)
        return None

    def clear(self):
        with self._lock:
            self._rules.clear()

    def describe(self):
        with self._lock:
            return [{**rule, "path": rule["path"].pattern if rule["path"] else None} for rule in self._rules]


class App:
    """Base for a stand-in's protocol; subclasses override handle/control/reset."""

    server_header = "lab-standin"

    def __init__(self):
        self.calls = CallLog()
        self.faults = Faults()
        self.base_url = ""

    def handle(self, request):
        raise NotImplementedError

    def control(self, request):
        return None

    def reset(self, scope):
        """Forget state for `scope` ("all"); calls and faults are cleared by the server."""

    def extra_headers(self):
        return {}

    def recorded_body(self, request):
        """The request body as recorded in /_lab/calls (override to hide secrets)."""
        return request.body.decode("utf-8", "replace")[:MAX_RECORDED_BODY]

    def fault_response(self, status):
        return json_response({"code": status, "message": f"injected fault: HTTP {status}"}, status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it Nagle's algorithm holds each body on keep-alive connections (~40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        """Calls are recorded in memory and served at /_lab/calls; keep the log file quiet."""

    @property
    def app(self):
        return self.server.app

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_request(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {key.lower(): value for key, value in self.headers.items()}
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        request = Request(method, unquote(parts.path), self.path, query, headers, body)
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded") and body:
            request.form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return request

    def _dispatch(self, method):
        request = self._read_request(method)
        if request.path.startswith("/_lab/"):
            self._send(self._control(request))
            return
        fault = self.app.faults.take(method, request.path)
        response = None
        if fault:
            if fault["kind"] == "drop":
                self._record(request, None, "dropped by injected fault")
                self.close_connection = True
                return
            if fault["seconds"]:
                time.sleep(fault["seconds"])
            if fault["status"]:
                response = self.app.fault_response(fault["status"])
                response.note = "injected fault"
        if response is None:
            try:
                response = self.app.handle(request)
            except Exception as exc:  # a stand-in bug must show up as a 500 with the reason, not a hung client
                response = text_response(f"stand-in error: {exc!r}", 500)
        self._record(request, response.status, response.note)
        self._send(response)

    def _record(self, request, status, note):
        body = self.app.recorded_body(request)
        self.app.calls.record(
            {
                "time": time.time(),
                "method": request.method,
                "path": request.path,
                # The request line's target as an access log shows it (path and query string).
                "target": request.raw_path,
                "params": {**request.query, **request.form},
                "status": status,
                "note": note,
                "body": body,
                "headers": {k: v for k, v in request.headers.items() if k not in ("authorization",)},
            }
        )

    def _control(self, request):
        try:
            if request.path == "/_lab/health":
                return json_response({"ok": True})
            if request.path == "/_lab/calls" and request.method == "GET":
                return json_response(self.app.calls.list())
            if request.path == "/_lab/reset" and request.method == "POST":
                scope = request.json().get("scope", "calls")
                self.app.calls.clear()
                self.app.faults.clear()
                if scope == "all":
                    self.app.reset(scope)
                return json_response({"ok": True})
            if request.path == "/_lab/faults":
                if request.method == "POST":
                    self.app.faults.add(request.json())
                    return json_response({"ok": True, "faults": self.app.faults.describe()})
                if request.method == "DELETE":
                    self.app.faults.clear()
                    return json_response({"ok": True})
                return json_response({"faults": self.app.faults.describe()})
            response = self.app.control(request)
        except (ValueError, KeyError, TypeError, re.error) as exc:
            return json_response({"error": f"bad control request: {exc}"}, 400)
        return response or json_response({"error": f"no control endpoint {request.method} {request.path}"}, 404)

    def _send(self, response):
        self.send_response(response.status)
        headers = {**self.app.extra_headers(), **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host, port, app):
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"stand-in: refusing to listen on {host}: loopback addresses only")
        self.app = app
        super().__init__((host, port), Handler)
        app.base_url = f"http://{host}:{self.server_address[1]}/"


def base_arguments(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, required=True)
    return parser


def serve(app, host, port):
    server = Server(host, port, app)
    print(f"{app.server_header} listening on {app.base_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
