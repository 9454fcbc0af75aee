"""integrations.alertmanager against the lab's real Alertmanager, delivering to a webhook receiver on loopback."""

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from integrations.alertmanager import AlertmanagerClient
from integrations.errors import IntegrationError
from integrations.ssh import SshClient, SshTarget
from lab.core import free_port

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def alertmanager(lab):
    info = lab.info("alertmanager")
    with AlertmanagerClient(info["url"]) as client:
        yield info, client


@pytest.fixture(scope="module")
def ssh(lab):
    info = lab.info("sshd")
    target = SshTarget(info["host"], info["port"], info["user"], info["key_file"], info["known_hosts"])
    with SshClient(target) as client:
        yield client


@pytest.fixture
def receiver():
    """A webhook receiver on a loopback port; yields (url, queue of (path, headers, body))."""
    received = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.put((self.path, dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def restore_config(alertmanager, ssh):
    """Put alertmanager.yml back as it was (and reload) after the test."""
    info, client = alertmanager
    original = ssh.read_file(info["config_file"])
    yield original
    ssh.write_file(info["config_file"], original)
    client.reload()


def _push_config(ssh, info, text):
    """The portal's way: write NAME.tmp, validate it with amtool on the host, swap it in atomically."""
    path = info["config_file"]
    ssh.write_file(f"{path}.tmp", text)
    check = ssh.run([info["amtool"], "check-config", f"{path}.tmp"])
    assert check.exit_status == 0, check.stdout + check.stderr
    ssh.rename(f"{path}.tmp", path)


def test_alert_is_delivered_to_a_webhook_receiver(alertmanager, ssh, receiver, restore_config):
    info, client = alertmanager
    url, received = receiver
    service = f"labtest-{uuid.uuid4().hex[:8]}"
    config = yaml.safe_load(restore_config)
    config["route"].setdefault("routes", []).insert(
        0, {"receiver": service, "matchers": [f'service="{service}"'], "group_by": ["alertname", "service"]}
    )
    config["receivers"].append(
        {
            "name": service,
            "webhook_configs": [
                {
                    "url": f"{url}/api/webhook/autoscale/{service}",
                    "send_resolved": True,
                    "http_config": {"authorization": {"type": "Bearer", "credentials": "lab-test-token"}},
                }
            ],
        }
    )
    _push_config(ssh, info, yaml.safe_dump(config, sort_keys=False))
    client.reload()
    assert service in client.status().config

    started = time.monotonic()
    client.post_alerts([{"labels": {"alertname": "HighCpu", "service": service}, "annotations": {"value": "93"}}])
    path, headers, body = received.get(timeout=10)
    elapsed = time.monotonic() - started

    assert path == f"/api/webhook/autoscale/{service}"
    assert headers["Authorization"] == "Bearer lab-test-token"
    assert body["receiver"] == service and body["status"] == "firing"
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "HighCpu", "service": service}
    assert alert["annotations"] == {"value": "93"} and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert elapsed < 5  # group_wait 1s

    (held,) = client.alerts({"service": service})
    assert held.labels["alertname"] == "HighCpu" and held.fingerprint == alert["fingerprint"]
    assert held.status == "active" and held.receivers == [service] and held.starts_at is not None
    assert client.alerts({"service": service}, active=False) == []


def test_rejected_reload_keeps_the_old_config(alertmanager, ssh, restore_config):
    info, client = alertmanager
    before = client.status().config
    # Route the tree to a receiver that does not exist (whatever else the file holds by now).
    broken = yaml.safe_load(restore_config)
    broken["route"]["receiver"] = "nowhere"
    ssh.write_file(info["config_file"], yaml.safe_dump(broken))
    with pytest.raises(IntegrationError) as excinfo:
        client.reload()
    error = excinfo.value
    assert error.system == "alertmanager" and error.permanent and error.code == "reload_failed"
    assert "nowhere" in error.message  # Alertmanager's own reason: the undefined receiver
    assert client.status().config == before


def test_status_and_unreachable(alertmanager):
    _, client = alertmanager
    status = client.status()
    assert status.cluster_status == "disabled" and status.version and status.uptime is not None
    with AlertmanagerClient(f"http://127.0.0.1:{free_port()}", timeout=1) as down:
        with pytest.raises(IntegrationError) as excinfo:
            down.alerts()
        assert not excinfo.value.permanent and excinfo.value.code == "unreachable"
        assert down.ready() is False
