"""The evaluator against the lab's real Alertmanager and Prometheus: still-firing alerts, alerts that start during
the cooldown, notifications that never arrived, target tracking, replacing lost instances, and the loop's ticks.

Alerts are posted straight to Alertmanager's API (as Prometheus does); the portal's webhook is not reachable from
the lab here, which is exactly a portal that was down while the alert fired.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events import evaluator, intake
from events.models import EvaluatorState, ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, post_webhook
from fleet.models import ManagedInstance
from integrations.alertmanager import AlertmanagerClient
from tests.browser.support import closed_loopback_url, random_service_name, scraped_service

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
Outcome = ScalingDecision.Outcome
Source = ScaleOutEvent.Source


@pytest.fixture
def make_config(make_config):
    """Configs without monitored instances: each test makes the inventory it needs (make_instances)."""

    def make(service_name, **fields):
        fields.setdefault("monitored_instances", [])
        return make_config(service_name, **fields)

    return make


@pytest.fixture
def monitoring(lab_settings, webhook_settings):
    return lab_settings("prometheus", "alertmanager")


@pytest.fixture
def alertmanager(monitoring):
    return AlertmanagerClient(monitoring.ALERTMANAGER_URL, timeout=5)


def fire(alertmanager, service, *, starts_at=None, alertname="AutoscaleHighCpu"):
    """Post a firing autoscale alert of `service` and wait until Alertmanager lists it; returns it."""
    starts_at = starts_at or datetime.now(UTC)
    alertmanager.post_alerts(
        [
            {
                "labels": {"alertname": alertname, "service": service, "autoscale": "true", "metric": "cpu"},
                "annotations": {"summary": f"{service}: CPU above 80%", "value": "93"},
                "startsAt": starts_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        ]
    )
    (alert,) = [a for a in alertmanager.alerts({"service": service}) if a.labels.get("alertname") == alertname]
    return alert


def resolve(alertmanager, service, *, alertname="AutoscaleHighCpu"):
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    alertmanager.post_alerts(
        [{"labels": {"alertname": alertname, "service": service, "autoscale": "true", "metric": "cpu"}, "endsAt": now}]
    )


def decisions(service):
    return list(ScalingDecision.objects.filter(service_name=service).order_by("id").values_list("outcome", flat=True))


def events_of(service):
    return list(ScaleOutEvent.objects.filter(service_name=service).order_by("id"))


def finish_and_age(event, seconds):
    """The event is over and began `seconds` ago (as if that much time had passed)."""
    ScaleOutEvent.objects.filter(pk=event.pk).update(
        status=ScaleOutEvent.Status.SUCCEEDED, created_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_an_alert_still_firing_after_the_cooldown_scales_again_within_one_pass(
    alertmanager, make_config, make_instances, client
):
    service = random_service_name("eval")
    config = make_config(service, min_instances=2, max_instances=4, cooldown_seconds=60)
    make_instances(config, 2)
    alert = fire(alertmanager, service)

    evaluator.evaluator_pass()
    (first,) = events_of(service)
    assert (first.source, first.vm_count, first.alert_name) == (Source.ALERT, 1, "AutoscaleHighCpu")
    assert first.alert_starts_at == alert.starts_at and first.notification is None

    # Inside the cooldown: recorded once, then nothing while nothing changes (no flood of "not scaled").
    for _pass in range(3):
        evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.SCALE_OUT, Outcome.COOLDOWN]
    assert len(events_of(service)) == 1

    # Alertmanager's repeat of the alert through the webhook is recorded as a duplicate of the first event.
    payload = firing_payload(service, fingerprint=alert.fingerprint, starts_at=alert.starts_at.isoformat())
    body = post_webhook(client, service, payload)
    assert body.decisions[0]["outcome"] == Outcome.DUPLICATE and f"#{first.pk}" in body.decisions[0]["reason"]

    # The cooldown ends with the alert still firing: the next pass scales again.
    make_instances(config, 1)
    finish_and_age(first, 61)
    result = evaluator.evaluator_pass()
    assert [d.outcome for d in result.decisions] == [Outcome.SCALE_OUT]
    first_event, second = events_of(service)
    assert second.source == Source.ALERT and second.alert_starts_at == alert.starts_at
    assert "3 instances running, maximum 4" in second.decisions.get().reason


def test_an_alert_that_started_during_the_cooldown_scales_once_the_cooldown_ends(
    alertmanager, make_config, make_instances, make_event
):
    service = random_service_name("eval")
    config = make_config(service, min_instances=1, max_instances=4, cooldown_seconds=60)
    make_instances(config, 2)
    earlier = make_event(config, status=ScaleOutEvent.Status.SUCCEEDED, source=Source.MANUAL)
    finish_and_age(earlier, 30)
    fire(alertmanager, service)

    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.COOLDOWN]
    assert "cooldown is 60 s" in ScalingDecision.objects.get(service_name=service).reason

    finish_and_age(earlier, 61)
    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.COOLDOWN, Outcome.SCALE_OUT]
    assert [e.pk for e in events_of(service)][0] == earlier.pk and len(events_of(service)) == 2


def test_a_notification_never_delivered_is_recovered_exactly_once(alertmanager, make_config, make_instances, client):
    service = random_service_name("eval")
    config = make_config(service, min_instances=1, max_instances=4, cooldown_seconds=300)
    make_instances(config, 2)
    alert = fire(alertmanager, service)

    # The portal was down: no notification arrived. Passes (and a second evaluator process) act once.
    for _pass in range(3):
        evaluator.evaluator_pass()
    (event,) = events_of(service)
    assert decisions(service) == [Outcome.SCALE_OUT, Outcome.COOLDOWN]

    # The portal is back and Alertmanager finally delivers: a duplicate of the recovered event, nothing more. Even
    # with the event over and no cooldown left, the same alert never scales twice through the webhook.
    finish_and_age(event, 400)
    payload = firing_payload(service, fingerprint=alert.fingerprint, starts_at=alert.starts_at.isoformat())
    body = post_webhook(client, service, payload)
    assert body.decisions[0]["outcome"] == Outcome.DUPLICATE, body
    assert f"#{event.pk}" in body.decisions[0]["reason"]
    assert len(events_of(service)) == 1


def test_two_evaluators_deciding_the_same_service_act_once(alertmanager, make_config, make_instances):
    """The evaluator's claim is "the action after event #N": a second process that saw the same inputs (the
    cooldown not yet checked, because it decided at the same moment) records a duplicate instead of acting."""
    service = random_service_name("eval")
    config = make_config(service, min_instances=1, max_instances=4, cooldown_seconds=0)
    make_instances(config, 1)
    fire(alertmanager, service)
    evaluator.evaluator_pass()
    (event,) = events_of(service)
    claimed = ScalingDecision.objects.get(event=event).dedup_key
    assert claimed == intake.evaluator_dedup_key(service_name=service, last_event_id=None)
    # The other process's insert of the same claim fails on the unique key and is recorded as a duplicate.
    ScaleOutEvent.objects.filter(pk=event.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)
    ScalingDecision.objects.create(
        service_name=service,
        config=config,
        outcome=Outcome.SCALE_OUT,
        reason="another process",
        dedup_key=intake.evaluator_dedup_key(service_name=service, last_event_id=event.pk),
    )
    result = evaluator.evaluator_pass()
    assert [d.outcome for d in result.decisions] == [Outcome.DUPLICATE]
    assert len(events_of(service)) == 1


def test_a_taken_claim_in_a_batch_is_a_duplicate_and_the_rest_of_the_batch_still_acts(
    alertmanager, make_config, make_instances
):
    """The batch inserts all its actions at once; when another process already took one service's claim, the batch
    is decided again one by one: that service records a duplicate, the others scale out once each."""
    services = [random_service_name("evb") for _ in range(4)]
    configs = [make_config(name, min_instances=1, max_instances=4, cooldown_seconds=0) for name in services]
    for config in configs:
        make_instances(config, 1)
        fire(alertmanager, config.service_name)
    taken = configs[2]
    ScalingDecision.objects.create(
        service_name=taken.service_name,
        config=taken,
        outcome=Outcome.SCALE_OUT,
        reason="another process",
        dedup_key=intake.evaluator_dedup_key(service_name=taken.service_name, last_event_id=None),
    )
    result = evaluator.evaluator_pass()
    outcomes = {d.service_name: d.outcome for d in result.decisions}
    assert outcomes == {
        name: Outcome.DUPLICATE if name == taken.service_name else Outcome.SCALE_OUT for name in services
    }
    assert [len(events_of(name)) for name in services] == [1, 1, 0, 1]


def test_a_pass_where_every_service_acts_costs_the_same_queries_for_few_and_many(
    alertmanager, make_config, make_instances, django_capture_on_commit_callbacks
):
    """Besides one queued trigger task per event, deciding and recording N actions takes the same queries for 3
    services as for 12 (a batch: lock, inputs, fleet, events, decisions)."""

    def services(n):
        names = [random_service_name("eva") for _ in range(n)]
        for name in names:
            make_instances(make_config(name, min_instances=1, max_instances=4, cooldown_seconds=300), 1)
            fire(alertmanager, name)
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            result = evaluator.evaluator_pass()
        assert sorted(d.outcome for d in result.decisions if d.service_name in names) == [Outcome.SCALE_OUT] * n
        queued = [q for q in queries.captured_queries if "django_q_ormq" in q["sql"]]
        assert len(queued) == n  # one trigger task per event
        return len(queries) - len(queued)

    few = services(3)
    assert services(12) == few


def test_a_resolved_alert_stops_the_scale_outs(alertmanager, make_config, make_instances):
    service = random_service_name("eval")
    config = make_config(service, min_instances=1, max_instances=4, cooldown_seconds=0)
    make_instances(config, 1)
    fire(alertmanager, service)
    evaluator.evaluator_pass()
    (event,) = events_of(service)
    ScaleOutEvent.objects.filter(pk=event.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)
    resolve(alertmanager, service)
    evaluator.evaluator_pass()
    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.SCALE_OUT, Outcome.NOT_FIRING]
    assert len(events_of(service)) == 1


def test_target_tracking_two_vms_jumping_to_150_percent_give_one_event_of_two(
    alertmanager, make_config, make_instances
):
    service = random_service_name("eval")
    config = make_config(
        service,
        policy_type="target_tracking",
        target_value=60,
        min_instances=2,
        max_instances=4,
        cooldown_seconds=300,
        promql_expression="vector(40)",
    )
    make_instances(config, 2)
    # A target-tracking service's alert (its rule may still be provisioned) does not decide: the metric does.
    fire(alertmanager, service)

    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.ON_TARGET]
    assert "2 VMs at 40 % against a target of 60 %: desired ceil(2 x 40 / 60) = 2" in (
        ScalingDecision.objects.get(service_name=service).reason
    )

    config.promql_expression = "vector(150)"
    config.save(update_fields=["promql_expression"])
    evaluator.evaluator_pass()
    evaluator.evaluator_pass()
    (event,) = events_of(service)
    assert (event.source, event.vm_count) == (Source.METRIC, 2)
    reason = "2 VMs at 150 % against a target of 60 %: desired ceil(2 x 150 / 60) = 5, max 4: +2"
    assert event.decisions.get().reason == reason and event.reason == reason
    assert decisions(service) == [Outcome.ON_TARGET, Outcome.SCALE_OUT, Outcome.COOLDOWN]


def test_target_tracking_reads_the_default_expression_from_real_scrapes(lab, monitoring, make_config, make_instances):
    service = random_service_name("evtt")
    scraped_service(lab, service, cpu_percent=80, memory_percent=30, vms=2)
    config = make_config(
        service, policy_type="target_tracking", target_value=60, min_instances=1, max_instances=10, cooldown_seconds=0
    )
    make_instances(config, 2)
    evaluator.evaluator_pass()
    (event,) = events_of(service)
    # ceil(2 x ~80 / 60) = 3: one VM more, whatever the exact measured percentage near 80.
    assert (event.source, event.vm_count) == (Source.METRIC, 1)
    assert event.reason.startswith("2 VMs at ") and "desired ceil(2 x " in event.reason and ") = 3: +1" in event.reason


def test_a_service_below_min_after_losses_is_replaced(monitoring, make_config, make_instances):
    service = random_service_name("eval")
    config = make_config(service, min_instances=3, max_instances=5, cooldown_seconds=300)
    make_instances(config, 1)
    make_instances(config, 2, state=ManagedInstance.State.LOST)
    evaluator.evaluator_pass()
    (event,) = events_of(service)
    assert (event.source, event.vm_count) == (Source.REPLACE, 2)
    decision = event.decisions.get()
    assert decision.outcome == Outcome.REPLACE
    assert (
        event.reason
        == decision.reason
        == ("Below the minimum: 1 instances running and 0 being created, minimum 3: replace 2 VM(s).")
    )


def test_with_alertmanager_down_only_min_is_kept(monitoring, make_config, make_instances):
    monitoring.ALERTMANAGER_URL = closed_loopback_url()
    quiet, short = random_service_name("eval"), random_service_name("eval")
    make_instances(make_config(quiet, min_instances=1), 2)
    make_instances(make_config(short, min_instances=2), 1)
    result = evaluator.evaluator_pass()
    assert result.problems and "Alertmanager" in result.problems[0]
    assert decisions(quiet) == [] and decisions(short) == [Outcome.REPLACE]


def test_a_steady_pass_costs_the_same_queries_for_few_and_many_services(alertmanager, make_config, make_instances):
    def services(n):
        names = [random_service_name("evq") for _ in range(n)]
        for name in names:
            make_instances(make_config(name, min_instances=1, max_instances=4, cooldown_seconds=300), 1)
            fire(alertmanager, name)
        evaluator.evaluator_pass()  # acts for each, then they are all in cooldown
        evaluator.evaluator_pass()
        with CaptureQueriesContext(connection) as queries:
            result = evaluator.evaluator_pass()
        assert result.decisions == []
        return len(queries)

    few = services(3)
    assert services(12) == few


def test_the_loop_claims_each_tick_once_and_hands_over_to_a_newer_run(monitoring, make_config):
    make_config(random_service_name("eval"))
    runs = {}

    def sleep_starting_a_second_run(seconds):
        if "second" not in runs:
            runs["second"] = evaluator.evaluator_run(run_seconds=2.5, interval=1)

    first = evaluator.evaluator_run(run_seconds=30, interval=1, sleep=sleep_starting_a_second_run)
    # The second run took the ownership over at its start and ran its ticks; the first ran its first tick only,
    # then stopped at its next one instead of running 30 s beside the newer run.
    assert first == 1 and runs["second"] >= 1
    state = EvaluatorState.objects.get()
    assert state.last_pass_at is not None and "services" in state.last_summary


def test_the_migrations_schedule_the_evaluator_every_minute():
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="events.tasks.evaluator_run")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
    assert import_string(schedule.func).__doc__
    # A run ends before the cluster's task timeout, and a newer run (a minute later, up to 30 s late) takes over.
    from django.conf import settings

    assert 90 < evaluator.RUN_SECONDS < settings.Q_CLUSTER["timeout"]


def test_manage_py_evaluate_runs_one_pass(monitoring, make_config, make_instances):
    from io import StringIO

    from django.core.management import call_command

    service = random_service_name("eval")
    config = make_config(service, min_instances=2)
    make_instances(config, 1)
    make_instances(config, 1, state=ManagedInstance.State.LOST)
    out = StringIO()
    call_command("evaluate", stdout=out)
    assert f"{service}: Replace (below the minimum): Below the minimum" in out.getvalue()
    assert "1 recorded, 1 actions" in out.getvalue()
