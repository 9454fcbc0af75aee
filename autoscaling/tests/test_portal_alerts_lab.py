"""The portal watching itself, in the lab: the real Prometheus scrapes a live portal through the scrape job a pass
provisions, a scale-out fails as the pipeline reports it, and the portal's own alert fires and reaches, through the
route the operations guide shows, a receiver standing in for the team's."""

import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from autoscaling import services
from autoscaling.models import ProvisioningRun
from autoscaling.tests.test_portal_rules import guide_route
from common.clients import prometheus_client
from events.models import AlertNotification, ScaleOutEvent
from events.status import callback_token_hash
from pipeline.portal import PortalClient

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

ALERT = "VmautoscaleScaleOutFailed"


def wait_for(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


class TeamReceiver:
    """An Alertmanager webhook receiver on loopback: what the team's mail or pager would get."""

    def __init__(self):
        self.notifications = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, path):
        return [alert for got, body in self.notifications if got == path for alert in body["alerts"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def team_route(lab, monitoring):
    """The guide's route in the lab's alertmanager.yml (its receivers pointed at a TeamReceiver, its timings
    short); the file is put back as it was afterwards."""
    receiver = TeamReceiver()
    path = Path(monitoring.ALERTMANAGER_CONFIG_FILE)
    original = path.read_text()
    example = guide_route()
    doc = yaml.safe_load(original)
    route = example["route"]["routes"][0]
    route.update(group_wait="1s", group_interval="1s")
    doc["route"].setdefault("routes", []).append(route)
    for item in example["receivers"]:
        doc["receivers"].append({"name": item["name"], "webhook_configs": [{"url": f"{receiver.url}/{item['name']}"}]})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    yield receiver
    path.write_text(original)
    requests.post(f"{lab.info('alertmanager')['url']}/-/reload", timeout=10).raise_for_status()
    receiver.close()


def amtool_routes(lab, **labels):
    info = lab.info("alertmanager")
    argv = [info["amtool"], "config", "routes", "test", f"--config.file={info['config_file']}"]
    argv += [f"{key}={value}" for key, value in labels.items()]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_a_failed_scale_out_fires_the_portals_alert_and_reaches_the_team(
    lab, monitoring, make_config, live_server, team_route
):
    portal_url = monitoring.PORTAL_URL
    monitoring.PORTAL_URL = live_server.url
    monitoring.PORTAL_ALERT_LABELS = (("", "team", "ops"),)
    config = make_config("selfwatch-web", monitored_instances=[])
    try:
        _fail_a_scale_out_and_follow_the_alert(lab, config, live_server, team_route)
    finally:
        ScaleOutEvent.objects.filter(config=config).delete()  # the config's clean-up needs it gone
        # The clean-up pass points the job away from the live server, which answers 500 once no test holds the
        # database.
        monitoring.PORTAL_URL = portal_url


def _fail_a_scale_out_and_follow_the_alert(lab, config, live_server, team_route):
    run = services.provisioning_run(reason="test")
    assert run.status == ProvisioningRun.Status.CHANGED, run.error

    # Prometheus loaded the portal's rules and scrapes the live portal's /metrics with them.
    with prometheus_client() as prometheus:
        group = next(g for g in prometheus.rules() if g.name == "vmautoscale-portal")
        assert group.file.endswith("/vmautoscale-portal.rules.yml")
        assert ALERT in {rule.name for rule in group.rules}
        host = live_server.url.removeprefix("http://")

        def portal_target():
            return [
                t for t in prometheus.targets() if t.scrape_pool == "vmautoscale-portal" and t.health == "up"
            ] and prometheus.query(f'vmautoscale_scaling_failures_total{{service="{config.service_name}"}}')

        series = wait_for("the portal's /metrics to be scraped", portal_target)
        assert {s.labels["instance"] for s in series} == {host}
        assert all(s.values[-1][1] == 0 for s in series)  # listed at 0: the failure will be an increase
        assert not [a for a in prometheus.alerts() if a.labels.get("alertname") == ALERT]

        # A scale-out fails: the pipeline reports its failed clone and the event's end through the callback door.
        token = secrets.token_urlsafe(16)
        event = ScaleOutEvent.objects.create(
            config=config,
            service_name=config.service_name,
            status=ScaleOutEvent.Status.TRIGGERED,
            callback_token_hash=callback_token_hash(token),
        )
        pipeline = PortalClient(f"{live_server.url}/api/events/{event.pk}/callback", token)
        pipeline.step_report("vm_clone", "failed", "the template cannot be cloned")
        pipeline.status_report({"status": "failed", "message": "vm_clone failed", "failed_step": "vm_clone"})
        event.refresh_from_db()
        assert event.status == ScaleOutEvent.Status.FAILED

        def firing():
            return [a for a in prometheus.alerts() if a.labels.get("alertname") == ALERT and a.state == "firing"]

        (alert,) = wait_for(f"{ALERT} to fire in Prometheus", firing)
    assert alert.labels == {
        "alertname": ALERT,
        "service": config.service_name,
        "action": "scale_out",
        "job": "vmautoscale-portal",
        "severity": "warning",
        "team": "ops",
        "managed_by": "vmautoscale",
        "portal_alert": "true",
    }
    assert alert.annotations["summary"] == f"{config.service_name}: a scale-out failed"

    # Alertmanager has it, routes it to the team (never to the service's autoscale webhook), and the team gets it.
    assert amtool_routes(lab, **alert.labels) == "ops-team"
    assert amtool_routes(lab, **{**alert.labels, "severity": "critical"}) == "ops-pager,ops-team"
    received = wait_for(
        "the team's receiver to get the alert",
        lambda: [a for a in team_route.alerts("/ops-team") if a["labels"]["alertname"] == ALERT],
    )
    assert received[0]["status"] == "firing" and received[0]["labels"]["service"] == config.service_name
    assert not team_route.alerts("/ops-pager")  # a warning: not paged
    # The service's own route (to the portal's webhook) takes only autoscale="true": the portal stored nothing.
    assert not AlertNotification.objects.filter(service_name=config.service_name).exists()
