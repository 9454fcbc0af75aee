"""Dry-run and the flap guard in the evaluator's pass, reading firing alerts from the lab's real Alertmanager."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from events import evaluator
from events.models import ScaleOutEvent, ScalingDecision
from events.tests.test_dry_run_and_flap_guard import flapped, later
from integrations.alertmanager import AlertmanagerClient
from tests.browser.support import random_service_name

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
Outcome = ScalingDecision.Outcome


@pytest.fixture
def alertmanager(lab_settings):
    settings = lab_settings("prometheus", "alertmanager")
    return AlertmanagerClient(settings.ALERTMANAGER_URL, timeout=5)


def fire(alertmanager, service, direction=None):
    """A firing autoscale alert of `service` (a scale-in one with direction "in"), listed by Alertmanager."""
    labels = {"alertname": f"Autoscale_{service}", "service": service, "autoscale": "true", "metric": "cpu"}
    if direction:
        labels["direction"] = direction
    alertmanager.post_alerts([{"labels": labels, "startsAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}])
    deadline = time.monotonic() + 5
    while not [a for a in alertmanager.alerts({"service": service}) if a.labels.get("direction") == direction]:
        assert time.monotonic() < deadline, "Alertmanager never listed the alert"
        time.sleep(0.1)


def outcomes(config):
    return list(ScalingDecision.objects.filter(config=config).order_by("pk").values_list("outcome", flat=True))


def test_the_evaluator_decides_a_dry_run_config_as_a_live_one_and_triggers_nothing(
    alertmanager, make_config, make_instances, django_capture_on_commit_callbacks
):
    live, dry = (
        make_config(random_service_name(prefix), monitored_instances=[], max_instances=6, cooldown_seconds=300, **extra)
        for prefix, extra in (("live", {}), ("dry", {"dry_run": True}))
    )
    for config in (live, dry):
        make_instances(config, 2)
        fire(alertmanager, config.service_name)
    with django_capture_on_commit_callbacks() as callbacks:
        evaluator.evaluator_pass()  # both act
        evaluator.evaluator_pass()  # both in cooldown
        evaluator.evaluator_pass()  # the same: nothing recorded
    ScaleOutEvent.objects.filter(config=live).update(status=ScaleOutEvent.Status.SUCCEEDED)
    later(live, 301)
    later(dry, 301)
    with django_capture_on_commit_callbacks() as more:
        evaluator.evaluator_pass()  # both act again, the cooldown over
    assert outcomes(live) == outcomes(dry) == [Outcome.SCALE_OUT, Outcome.COOLDOWN, Outcome.SCALE_OUT]
    assert ScaleOutEvent.objects.filter(config=live).count() == 2 and len(callbacks) + len(more) == 2
    assert not ScaleOutEvent.objects.filter(config=dry).exists()
    would = ScalingDecision.objects.filter(config=dry, outcome=Outcome.SCALE_OUT)
    assert [d.dry_run for d in would] == [True, True]
    assert all(d.reason_text.startswith("Dry run, nothing triggered: would scale out by 1 VM(s).") for d in would)
    # Each would-be action claimed "the action after" the one before it, as a live event's claim does.
    assert len({d.dedup_key for d in would}) == 2


def test_the_evaluator_holds_a_firing_scale_in_after_out_in_out_within_an_hour(
    alertmanager, make_config, make_instances
):
    config = make_config(
        random_service_name("flap"),
        monitored_instances=[],
        min_instances=1,
        max_instances=6,
        scale_in_threshold=20,
        cooldown_seconds=0,
        scale_in_cooldown_seconds=0,
    )
    make_instances(config, 3)
    flapped(config)
    fire(alertmanager, config.service_name, direction="in")
    evaluator.evaluator_pass()
    assert outcomes(config) == [Outcome.FLAP_HOLD]
    assert not ScaleOutEvent.objects.filter(config=config, created_at__gte=timezone.now() - timedelta(minutes=5))
    # 51 minutes later, an hour after the last scale-out of the three, scale-in goes again.
    later(config, 51 * 60)
    evaluator.evaluator_pass()
    assert outcomes(config) == [Outcome.FLAP_HOLD, Outcome.SCALE_IN]
