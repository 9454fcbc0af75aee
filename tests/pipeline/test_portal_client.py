"""The pipeline's portal client waits out a portal being restarted (refused connections, 502/503) up to
PORTAL_DOWN_WAIT, and tries other failures (500, which may have been served) only a few times."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab.core import free_port
from pipeline.portal import PortalClient, PortalError


class Portal:
    """A loopback portal whose answers the test scripts: each a status; after the script, 200."""

    def __init__(self, port, script=()):
        self.script = list(script)
        self.calls = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append((self.path, self.headers.get("Authorization"), json.loads(body or b"{}")))
                status = outer.script.pop(0) if outer.script else 200
                answer = json.dumps({"detail": f"status {status}"} if status != 200 else {"ok": True}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port():
    return free_port()


def client(port, **options):
    return PortalClient(f"http://127.0.0.1:{port}/api/events/7/callback", "t0ken", backoff=0.1, **options)


def test_a_portal_down_for_a_few_seconds_is_waited_for(port):
    portals = []
    threading.Timer(1.5, lambda: portals.append(Portal(port))).start()
    started = time.monotonic()
    try:
        answer = client(port, down_wait=30).step_report("f5_drain", "succeeded")
    finally:
        for portal in portals:
            portal.stop()
    assert answer == {"ok": True}
    assert 1.4 < time.monotonic() - started < 10
    ((path, authorization, body),) = portals[0].calls
    assert path == "/api/events/7/callback/step" and authorization == "Bearer t0ken"
    assert (body["step"], body["status"]) == ("f5_drain", "succeeded")


def test_a_portal_that_stays_down_fails_the_call_after_the_wait(port):
    started = time.monotonic()
    with pytest.raises(PortalError, match="could not be reached"):
        client(port, down_wait=1.5).step_report("f5_drain", "succeeded")
    assert 0.5 < time.monotonic() - started < 4  # it never sleeps past the wait


def test_503_is_waited_out_and_500_tried_three_times(port):
    portal = Portal(port, script=[503] * 4)
    try:
        assert client(port, down_wait=30).step_report("f5_drain", "running") == {"ok": True}
        assert len(portal.calls) == 5
        portal.calls.clear()
        portal.script = [500] * 5
        with pytest.raises(PortalError) as failed:
            client(port, down_wait=30).step_report("f5_drain", "running")
        assert failed.value.status == 500 and len(portal.calls) == 3
        portal.calls.clear()
        portal.script = [409]
        with pytest.raises(PortalError) as refused:
            client(port, down_wait=30).step_report("f5_drain", "running")
        assert refused.value.status == 409 and len(portal.calls) == 1  # a refusal is final
    finally:
        portal.stop()
