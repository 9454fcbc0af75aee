"""Dry-run and the flap guard through the doors: the webhook, an operator's requests and the evaluator's paths.

A dry-run config is decided on the same path as a live one and records the same decisions for the same signals;
it creates no event and queues no trigger. The flap guard holds scale-in after out, in, out within an hour.
"""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from autoscaling import policy
from events import evaluator, intake
from events.models import ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, post_webhook
from fleet.models import ManagedInstance

pytestmark = pytest.mark.django_db
Outcome = ScalingDecision.Outcome
State = ManagedInstance.State


def out_alert(service, n):
    """Scale-out alert number `n` of `service` (its own fingerprint and start)."""
    return firing_payload(service, fingerprint=f"{n:016x}", starts_at=f"2026-12-01T10:00:{n:02d}Z")


def in_alert(service, n):
    """Scale-in alert number `n` (label direction="in"), as the provisioned scale-in rule labels it."""
    return firing_payload(
        service,
        alertname=f"ServiceCpuLow_{service}",
        fingerprint=f"{n + 50:016x}",
        starts_at=f"2026-12-01T11:00:{n:02d}Z",
        labels={"direction": "in", "severity": "warning"},
    )


def later(config, seconds):
    """Time passes for `config`: its events, decisions and instances' service times move `seconds` back."""
    shift = timedelta(seconds=seconds)
    ScaleOutEvent.objects.filter(config=config).update(created_at=F("created_at") - shift)
    ScalingDecision.objects.filter(config=config).update(decided_at=F("decided_at") - shift)
    ManagedInstance.objects.filter(config=config, in_service_at__isnull=False).update(
        in_service_at=F("in_service_at") - shift
    )


def pipeline_done(config):
    """The live pipeline finishes every event in progress: a scale-out's VMs come into service, a scale-in's
    instances are removed."""
    for event in ScaleOutEvent.objects.filter(config=config, status__in=ScaleOutEvent.ACTIVE_STATUSES):
        if event.action == ScaleOutEvent.Action.SCALE_OUT:
            ManagedInstance.objects.bulk_create(
                ManagedInstance(
                    config=config,
                    state=State.IN_SERVICE,
                    origin=ManagedInstance.Origin.CREATED,
                    vm_name=f"{config.service_name}-e{event.pk}-{n}",
                    in_service_at=timezone.now(),
                )
                for n in range(event.vm_count)
            )
        else:
            event.instances_removed.update(state=State.REMOVED)
        event.status = ScaleOutEvent.Status.SUCCEEDED
        event.save(update_fields=["status"])


# Signals: webhook deliveries, an operator's requests, the evaluator's single and batch paths; time passing.
SEQUENCE = [
    ("webhook", lambda s: out_alert(s, 1)),  # scale out
    ("webhook", lambda s: out_alert(s, 1)),  # the same alert again: a duplicate
    ("webhook", lambda s: out_alert(s, 2)),  # cooldown
    ("manual", 2),  # cooldown
    ("webhook", lambda s: in_alert(s, 1)),  # the new VM warms up
    ("later", 301),
    ("webhook", lambda s: in_alert(s, 2)),  # scale in
    ("later", 60),
    ("webhook", lambda s: out_alert(s, 3)),  # scale out: out, in, out within an hour
    ("later", 301),
    ("webhook", lambda s: in_alert(s, 3)),  # held against flapping
    (
        "evaluator",
        policy.Signal.idle(),
    ),  # held again: the same outcome as the last, which the evaluator does not record
    ("batch", policy.Signal.idle()),  # the same (the batch path)
    ("manual", 2),  # scale out by 2
    ("later", 301),
    ("batch", policy.Signal.alert()),  # scale out
    ("evaluator", policy.Signal.alert()),  # cooldown
    ("evaluator", policy.Signal.alert()),  # the same: not recorded
    ("remove", None),  # an operator's removal: never held
]


def run(config, steps, *, client, user, capture):
    """Each step's recorded decisions as (outcome, VMs) and the number of on-commit callbacks it queued."""
    service = config.service_name
    recorded, queued = [], 0
    for kind, arg in steps:
        if kind == "later":
            later(config, arg)
            continue
        before = ScalingDecision.objects.filter(config=config).order_by("-pk").values_list("pk", flat=True).first()
        with capture() as callbacks:
            if kind == "webhook":
                assert post_webhook(client, service, arg(service)).status_code == 202
            elif kind == "manual":
                intake.scale_out_request(service_name=service, user=user, vm_count=arg)
            elif kind == "remove":
                first = ManagedInstance.objects.filter(config=config, state=State.IN_SERVICE).order_by("pk").first()
                intake.instance_remove_request(instance_id=first.pk, user=user)
            elif kind == "evaluator":
                evaluator.service_decide(config_id=config.pk, signal=arg)
            elif kind == "batch":
                evaluator._batch_decide([(config.pk, arg, None)])
        # The webhook's own callback wakes the decider; the others queue triggers.
        queued += sum(getattr(callback, "func", callback) is not intake.decider_wake for callback in callbacks)
        for decision in ScalingDecision.objects.filter(config=config, pk__gt=before or 0).order_by("pk"):
            if decision.event_id:
                count = decision.event.vm_count
            else:
                count = decision.reason_params.get("count", 0) if decision.outcome in ScalingDecision.ACTIONS else 0
            recorded.append((decision.outcome, count))
        pipeline_done(config)
    return recorded, queued


@pytest.fixture
def fleet_config(make_config, make_instances):
    def make(service, **fields):
        values = {
            "min_instances": 1,
            "max_instances": 12,
            "cooldown_seconds": 300,
            "scale_in_threshold": 20,
            "scale_in_cooldown_seconds": 300,
        }
        config = make_config(service, **{**values, **fields})
        make_instances(config, 3)
        return config

    return make


def test_a_dry_run_records_the_decisions_a_live_run_makes_and_triggers_nothing(
    client, webhook_settings, admin_user, fleet_config, django_capture_on_commit_callbacks
):
    live = fleet_config("live-web")
    dry = fleet_config("dry-web", dry_run=True)
    kwargs = {"client": client, "user": admin_user, "capture": django_capture_on_commit_callbacks}

    live_decisions, live_queued = run(live, SEQUENCE, **kwargs)
    dry_decisions, dry_queued = run(dry, SEQUENCE, **kwargs)

    assert live_decisions == [
        (Outcome.SCALE_OUT, 1),
        (Outcome.DUPLICATE, 0),
        (Outcome.COOLDOWN, 0),
        (Outcome.COOLDOWN, 0),
        (Outcome.WARMING_UP, 0),
        (Outcome.SCALE_IN, 1),
        (Outcome.SCALE_OUT, 1),
        (Outcome.FLAP_HOLD, 0),
        (Outcome.SCALE_OUT, 2),
        (Outcome.SCALE_OUT, 1),
        (Outcome.COOLDOWN, 0),
        (Outcome.SCALE_IN, 1),
    ]
    assert dry_decisions == live_decisions
    # Live: an event and a trigger per action. Dry-run: neither, and no instance chosen for removal.
    assert ScaleOutEvent.objects.filter(config=live).count() == live_queued == 6
    assert ScaleOutEvent.objects.filter(config=dry).count() == dry_queued == 0
    assert not ManagedInstance.objects.filter(config=dry, removed_by_event__isnull=False).exists()
    assert ManagedInstance.objects.filter(config=dry).count() == 4  # 3 made, 1 adopted: nothing created
    # Every dry-run decision is marked; each would-be action says what it would have done.
    assert set(ScalingDecision.objects.filter(config=dry).values_list("dry_run", flat=True)) == {True}
    assert set(ScalingDecision.objects.filter(config=live).values_list("dry_run", flat=True)) == {False}
    first = ScalingDecision.objects.filter(config=dry).order_by("pk").first()
    assert first.reason_text == (
        "Dry run, nothing triggered: would scale out by 1 VM(s). Scale out by 1 VM(s): 4 instances running, maximum 12."
    )
    would_in = ScalingDecision.objects.filter(config=dry, outcome=Outcome.SCALE_IN).order_by("pk").first()
    assert would_in.reason_text.startswith("Dry run, nothing triggered: would scale in by 1 VM(s). Scale in by 1")


def test_a_dry_run_manual_request_answers_409_dry_run_through_the_api(admin_client, make_config):
    make_config("web", dry_run=True, max_instances=5)
    response = admin_client.post("/api/autoscaling/events", {"service_name": "web", "vm_count": 2}, "application/json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "dry_run" and body["outcome"] == "scale_out"
    assert body["detail"].startswith("Dry run, nothing triggered: would scale out by 2 VM(s).")
    assert not ScaleOutEvent.objects.exists()
    listed = admin_client.get("/api/autoscaling/decisions?dry_run=true").json()
    assert [(d["outcome"], d["dry_run"]) for d in listed["results"]] == [("scale_out", True)]
    # The same request again: in cooldown since the would-be scale-out.
    again = admin_client.post("/api/autoscaling/events", {"service_name": "web"}, "application/json")
    assert (again.status_code, again.json()["code"], again.json()["outcome"]) == (409, "not_scaled", "cooldown")


def flapped(config):
    """Out, in, out within the last hour, as events of `config`."""
    now = timezone.now()
    for minutes, action in ((50, ScaleOutEvent.Action.SCALE_OUT), (30, "scale_in"), (10, "scale_out")):
        event = ScaleOutEvent.objects.create(
            config=config, service_name=config.service_name, action=action, status=ScaleOutEvent.Status.SUCCEEDED
        )
        ScaleOutEvent.objects.filter(pk=event.pk).update(created_at=now - timedelta(minutes=minutes))


def test_the_webhook_holds_scale_in_after_out_in_out_within_an_hour(client, webhook_settings, fleet_config):
    config = fleet_config("flap-web", scale_in_cooldown_seconds=0, cooldown_seconds=0)
    flapped(config)
    assert post_webhook(client, "flap-web", in_alert("flap-web", 1)).status_code == 202
    decision = ScalingDecision.objects.get(config=config)
    assert decision.outcome == Outcome.FLAP_HOLD and decision.event_id is None
    assert decision.get_outcome_display() == "Scale-in held (flapping)"
    assert decision.reason_text.startswith(
        "Scale-in held against flapping: 2 reversals (out, in, out) within an hour, the last scale-out 600 s ago; "
        "no scale-in until "
    )
    # Scale-out is not held; a cancelled event is no action.
    assert post_webhook(client, "flap-web", out_alert("flap-web", 1)).status_code == 202
    assert ScalingDecision.objects.filter(config=config).order_by("pk").last().outcome == Outcome.SCALE_OUT
    ScaleOutEvent.objects.filter(config=config).update(status=ScaleOutEvent.Status.CANCELLED)
    assert post_webhook(client, "flap-web", in_alert("flap-web", 2)).status_code == 202
    assert ScalingDecision.objects.filter(config=config).order_by("pk").last().outcome == Outcome.SCALE_IN


def test_the_evaluators_paths_hold_scale_in_after_out_in_out_within_an_hour(fleet_config):
    single, batch = (fleet_config(name, scale_in_cooldown_seconds=0, cooldown_seconds=0) for name in ("f-one", "f-two"))
    flapped(single)
    flapped(batch)
    assert evaluator.service_decide(config_id=single.pk, signal=policy.Signal.idle()).outcome == Outcome.FLAP_HOLD
    (row,) = evaluator._batch_decide([(batch.pk, policy.Signal.idle(), None)])
    assert row.outcome == Outcome.FLAP_HOLD and row.event_id is None
    assert not ScaleOutEvent.objects.filter(config__in=[single, batch], status=ScaleOutEvent.Status.PENDING).exists()
