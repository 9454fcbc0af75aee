"""The seed's concurrency scenarios (5.3) through the whole loop: several services scaling out at once, and one
service alerted over and over, by two Alertmanagers (an HA pair sends duplicates by design), getting exactly the
scale-outs its cooldown and maximum allow."""

import shutil
import threading

import pytest
import requests
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
    base = lab.run_dir / "alertmanager-ha"
    (base / "data").mkdir(parents=True, exist_ok=True)
    config = base / "alertmanager.yml"
    shutil.copyfile(first["config_file"], config)
    port = free_port()
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


def _relay_alerts(first_url, second_url, service):
    """Send the second Alertmanager what Prometheus sends the first (Prometheus notifies every Alertmanager of its
    list): the same labels, annotations and start, so the same fingerprint."""
    alerts = requests.get(f"{first_url}/api/v2/alerts", params={"filter": f'service="{service}"'}, timeout=10).json()
    body = [
        {
            "labels": alert["labels"],
            "annotations": alert["annotations"],
            "startsAt": alert["startsAt"],
            "endsAt": alert["endsAt"],
            "generatorURL": alert["generatorURL"],
        }
        for alert in alerts
    ]
    if body:
        requests.post(f"{second_url}/api/v2/alerts", json=body, timeout=10).raise_for_status()
    return len(body)


def test_repeated_and_ha_duplicate_alerts_get_exactly_what_cooldown_and_max_allow(e2e):
    # One service limited by its maximum (2 running, at most 3, no cooldown), one by its cooldown.
    at_max = e2e.plan(instances=2, threshold=70, cooldown_seconds=0, max_instances=3)
    cooling = e2e.plan(instances=2, threshold=70, cooldown_seconds=300, max_instances=4)
    plans = (at_max, cooling)
    for plan in plans:
        e2e.seed(plan)
    pid, second_url = _start_second_alertmanager(e2e.lab)
    try:
        first_url = e2e.alertmanager["url"]
        for plan in plans:
            e2e.load(plan, 170)
        # Relay while the alerts fire, as Prometheus does every evaluation.
        relay_stop = threading.Event()

        def relay():
            while not relay_stop.wait(0.5):
                for plan in plans:
                    _relay_alerts(first_url, second_url, plan.service)

        relayer = threading.Thread(target=relay, daemon=True)
        relayer.start()
        try:
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
            relay_stop.set()
            relayer.join(timeout=5)
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
    assert answers and set(answers) == {200}

    # New alerts (a new start: the alert resolved and fired again) still find the limits.
    for plan in plans:
        assert e2e.post_webhook(plan.service, firing_payload(plan.service)).status_code == 200

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
