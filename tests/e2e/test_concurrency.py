"""The seed's concurrency scenarios (5.3) through the whole loop: several services scaling out at once, and one
service alerted over and over, by two Alertmanagers (an HA pair sends duplicates by design: Prometheus notifies
both, both call the portal), getting exactly the scale-outs its cooldown and maximum allow."""

import contextlib
import shutil
import threading
from pathlib import Path

import pytest
import requests
import yaml
from django.db import connection

from autoscaling.models import IpAllocation
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from lab.core import free_port
from tests.e2e.conftest import _kill, firing_payload, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome


def test_several_services_scale_out_at_the_same_time(e2e):
    plans = [e2e.plan(instances=2, threshold=70, cooldown_seconds=300) for _ in range(3)]
    for plan in plans:
        e2e.seed(plan)
    for plan in plans:
        e2e.load(plan, 170)
    events = [e2e.wait_event(plan, timeout=60) for plan in plans]

    for plan, event in zip(plans, events, strict=True):
        assert event.status == Status.SUCCEEDED, (plan.service, event.error, e2e.console(event))
        assert len(e2e.vms(plan)) == 1 and len(e2e.f5_members(plan)) == 1
    builds = [(e.jenkins_job, e.build_number) for e in events]
    assert len(set(builds)) == 3
    ips = [ip for event in events for ip in event.vm_ips]
    assert len(set(ips)) == 3
    assert IpAllocation.objects.filter(address__in=ips, state=IpAllocation.State.IN_USE).count() == 3
    # Each service scaled out once however often its alert arrived.
    for plan in plans:
        assert len(e2e.events(plan)) == 1, e2e.diagnose(plan)


def _start_second_alertmanager(lab):
    """A second Alertmanager with the same configuration (as the other half of an HA pair): its own process,
    port and storage, not clustered (an HA pair notifies from both members; the portal must deduplicate)."""
    first = lab.info("alertmanager")
    port = free_port()
    base = lab.run_dir / f"alertmanager-ha-{port}"
    (base / "data").mkdir(parents=True, exist_ok=True)
    config = base / "alertmanager.yml"
    shutil.copyfile(first["config_file"], config)
    url = f"http://127.0.0.1:{port}"
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={base / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",
    ]
    pid = lab.spawn("alertmanager-ha", argv)
    lab.wait_http("alertmanager-ha", f"{url}/-/ready", pid=pid, accept=lambda status: status == 200)
    return pid, url


@contextlib.contextmanager
def _prometheus_notifies(lab, alertmanager_url):
    """Prometheus sends its alerts to one more Alertmanager (its prometheus.yml, reloaded) for the block's duration."""
    info = lab.info("prometheus")
    config_file = Path(info["config_file"])
    original = config_file.read_text()
    config = yaml.safe_load(original)
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    targets.append(alertmanager_url.removeprefix("http://"))

    def apply(text):
        tmp = config_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(config_file)
        requests.post(f"{info['url']}/-/reload", timeout=10).raise_for_status()

    def active():
        data = requests.get(f"{info['url']}/api/v1/alertmanagers", timeout=10).json()["data"]
        return {am["url"].split("/api/")[0] for am in data["activeAlertmanagers"]}

    apply(yaml.safe_dump(config, sort_keys=False))
    try:
        wait_for("Prometheus to know both Alertmanagers", lambda: alertmanager_url in active(), timeout=20)
        yield
    finally:
        apply(original)


def test_repeated_and_ha_duplicate_alerts_get_exactly_what_cooldown_and_max_allow(e2e):
    # One service limited by its maximum (2 running, at most 3, no cooldown), one by its cooldown.
    at_max = e2e.plan(instances=2, threshold=70, cooldown_seconds=0, max_instances=3)
    cooling = e2e.plan(instances=2, threshold=70, cooldown_seconds=300, max_instances=4)
    plans = (at_max, cooling)
    for plan in plans:
        e2e.seed(plan)
    pid, second_url = _start_second_alertmanager(e2e.lab)
    first_url = e2e.alertmanager["url"]
    try:
        with _prometheus_notifies(e2e.lab, second_url):
            for plan in plans:
                e2e.load(plan, 170)
            first_events = [e2e.wait_event(plan, timeout=60) for plan in plans]
            # Both Alertmanagers have notified the portal about each service.
            for plan in plans:
                wait_for(
                    f"notifications of {plan.service} from both Alertmanagers",
                    lambda plan=plan: (
                        {
                            n.payload.get("externalURL")
                            for n in AlertNotification.objects.filter(service_name=plan.service, status="firing")
                        }
                        >= {first_url, second_url}
                    ),
                    timeout=20,
                )
    finally:
        _kill(pid)

    for plan, event in zip(plans, first_events, strict=True):
        assert event.status == Status.SUCCEEDED, (plan.service, event.error, e2e.console(event))

    # Alertmanager repeats a notification byte for byte: ten senders replay each stored one (at once on PostgreSQL).
    notifications = list(AlertNotification.objects.filter(service_name__in=[p.service for p in plans], status="firing"))
    answers = []

    def replay(notification):
        answers.append(e2e.post_webhook(notification.service_name, notification.payload).status_code)

    senders = [(n,) for n in notifications for _ in range(10)]
    if connection.vendor == "postgresql":
        threads = [threading.Thread(target=replay, args=args) for args in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    else:
        # The live server shares one connection to SQLite's in-memory test database: parallel requests collide.
        for args in senders:
            replay(*args)
    assert answers and set(answers) == {202}

    # New alerts (a new start: the alert resolved and fired again) still find the limits.
    for plan in plans:
        assert e2e.post_webhook(plan.service, firing_payload(plan.service)).status_code == 202
    e2e.wait_decided()

    for plan, event in zip(plans, first_events, strict=True):
        assert [e.pk for e in e2e.events(plan)] == [event.pk], e2e.diagnose(plan)
        outcomes = list(ScalingDecision.objects.filter(service_name=plan.service).values_list("outcome", flat=True))
        assert outcomes.count(Outcome.SCALE_OUT) == 1
        assert outcomes.count(Outcome.DUPLICATE) >= 10
    at_max_outcomes = set(ScalingDecision.objects.filter(service_name=at_max.service).values_list("outcome", flat=True))
    cooling_outcomes = set(
        ScalingDecision.objects.filter(service_name=cooling.service).values_list("outcome", flat=True)
    )
    assert Outcome.AT_MAX in at_max_outcomes and Outcome.COOLDOWN not in at_max_outcomes
    assert Outcome.COOLDOWN in cooling_outcomes
