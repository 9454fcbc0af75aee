"""The Alertmanager webhook: authentication, strict validation, storage and the scaling decisions."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from autoscaling.models import IpAllocation, IpPool
from events import intake, trigger
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, load_payload, post_webhook
from fleet.models import ManagedInstance

pytestmark = pytest.mark.django_db

Outcome = ScalingDecision.Outcome


def outcomes():
    return list(ScalingDecision.objects.order_by("id").values_list("outcome", flat=True))


def test_the_built_payload_is_the_real_capture():
    """lab.payloads builds what Alertmanager sends: for "web", exactly the captured first firing."""
    assert firing_payload("web") == load_payload("01_firing_first.json")


# --- authentication ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer wrong-token", "Bearer ", "Token test-webhook-token", "Basic bm90OmJhc2U2NA==", "Basic !!!"],
)
def test_wrong_credentials_get_401_and_nothing_is_stored(client, webhook_settings, make_config, authorization):
    make_config("web")
    response = post_webhook(client, "web", load_payload("01_firing_first.json"), authorization=authorization)
    assert response.status_code == 401
    assert "credentials" in response.json()["detail"]
    assert AlertNotification.objects.count() == 0
    assert ScalingDecision.objects.count() == 0


def test_basic_auth_works_when_configured(client, webhook_settings, make_config):
    make_config("db")
    credential = base64.b64encode(b"alertmanager:basic-secret").decode()
    response = post_webhook(
        client, "db", load_payload("04_db_firing_posted_directly_to_am.json"), authorization=f"Basic {credential}"
    )
    assert response.status_code == 202
    assert outcomes() == [Outcome.SCALE_OUT]
    wrong = base64.b64encode(b"alertmanager:other").decode()
    response = post_webhook(client, "db", firing_payload("db"), authorization=f"Basic {wrong}")
    assert response.status_code == 401


def test_basic_auth_is_refused_when_not_configured(client, webhook_settings, make_config):
    webhook_settings.WEBHOOK_BASIC_USER = ""
    webhook_settings.WEBHOOK_BASIC_PASSWORD = ""
    make_config("web")
    credential = base64.b64encode(b":").decode()
    assert post_webhook(client, "web", firing_payload("web"), authorization=f"Basic {credential}").status_code == 401


# --- validation ----------------------------------------------------------------------------------------------
def _broken(change):
    body = load_payload("01_firing_first.json")
    change(body)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_broken(lambda b: b.pop("groupKey")), "groupKey"),
        (_broken(lambda b: b.update(version="3")), "version"),
        (_broken(lambda b: b.update(alerts=[])), "alerts"),
        (_broken(lambda b: b["alerts"][0].update(status="burning")), "alerts"),
        (_broken(lambda b: b["alerts"][0].update(startsAt="yesterday")), "alerts"),
        (_broken(lambda b: b["alerts"][0].pop("fingerprint")), "alerts"),
        (_broken(lambda b: b["alerts"][0].update(labels=["service"])), "alerts"),
        (_broken(lambda b: b.update(status=None)), "status"),
    ],
)
def test_malformed_payload_gets_400_naming_the_field(client, webhook_settings, make_config, body, field):
    make_config("web")
    response = post_webhook(client, "web", body)
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert AlertNotification.objects.count() == 0


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"firing"'])
def test_non_object_body_gets_400(client, webhook_settings, make_config, raw):
    make_config("web")
    response = post_webhook(client, "web", raw)
    assert response.status_code == 400
    assert AlertNotification.objects.count() == 0


# --- storage and decisions -----------------------------------------------------------------------------------
def test_first_firing_scales_out_and_repeat_is_a_duplicate(client, webhook_settings, make_config, settings):
    config = make_config("web", scale_out_step=2)
    first = post_webhook(client, "web", load_payload("01_firing_first.json"))
    assert first.status_code == 202
    decision = first.decisions[0]
    assert decision["outcome"] == Outcome.SCALE_OUT
    event = ScaleOutEvent.objects.get()
    assert decision["event"] == event.pk
    assert event.config == config
    assert event.status == ScaleOutEvent.Status.PENDING
    assert event.vm_count == 2
    assert event.alert_name == "ServiceCpuHigh_web"
    assert event.alert_labels["severity"] == "warning"
    assert event.jenkins_job == "vmautoscale-web"
    notification = AlertNotification.objects.get()
    assert notification.payload == load_payload("01_firing_first.json")
    assert notification.config == config
    assert event.notification == notification

    repeat = post_webhook(client, "web", load_payload("02_firing_repeat.json"))
    assert repeat.status_code == 202
    assert repeat.decisions[0]["outcome"] == Outcome.DUPLICATE
    assert f"#{event.pk}" in repeat.decisions[0]["reason"]
    assert ScaleOutEvent.objects.count() == 1
    assert AlertNotification.objects.count() == 2


def test_scale_out_queues_the_trigger_task_on_commit(
    client, webhook_settings, make_config, django_capture_on_commit_callbacks
):
    make_config("web")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post_webhook(client, "web", firing_payload("web"))
    # The webhook's commit wakes the decider; the decider's commit queues the trigger.
    assert [getattr(callback, "func", callback) for callback in callbacks] == [
        intake.decider_wake,
        trigger.event_trigger_queue,
    ]
    queued = [row.task for row in OrmQ.objects.order_by("id")]
    assert [task["func"] for task in queued] == [intake.notifications_decide, trigger.event_trigger]
    assert queued[1]["kwargs"]["event_id"] == ScaleOutEvent.objects.get().pk


def test_not_scaled_decisions_queue_nothing(client, webhook_settings, make_config, django_capture_on_commit_callbacks):
    make_config("web", enabled=False)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post_webhook(client, "web", firing_payload("web"))
    assert [getattr(callback, "func", callback) for callback in callbacks] == [intake.decider_wake]  # no trigger


def test_resolved_alert_is_recorded_and_never_scales(client, webhook_settings, make_config):
    make_config("web", cooldown_seconds=0)
    response = post_webhook(client, "web", load_payload("03_resolved.json"))
    assert response.status_code == 202
    assert outcomes() == [Outcome.RESOLVED]
    assert ScaleOutEvent.objects.count() == 0


def test_each_alert_is_decided_by_its_own_status(client, webhook_settings, make_config):
    make_config("web")
    body = load_payload("06_firing_with_stale_resolved_alert_after_am_reload.json")
    assert body["status"] == "firing" and body["alerts"][0]["status"] == "resolved"
    response = post_webhook(client, "web", body)
    assert response.status_code == 202
    assert sorted(d["outcome"] for d in response.decisions) == [Outcome.RESOLVED, Outcome.SCALE_OUT]
    assert ScaleOutEvent.objects.count() == 1


def test_unknown_service_is_recorded(client, webhook_settings):
    response = post_webhook(client, "ghost", firing_payload("ghost"))
    assert response.status_code == 202
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.UNKNOWN_SERVICE
    assert "ghost" in decision.reason
    assert AlertNotification.objects.get().config is None


def test_disabled_config_does_not_scale(client, webhook_settings, make_config):
    make_config("web", enabled=False)
    post_webhook(client, "web", firing_payload("web"))
    assert outcomes() == [Outcome.DISABLED]
    assert ScaleOutEvent.objects.count() == 0


def test_cooldown_since_last_event_is_recorded_with_reason(client, webhook_settings, make_config, make_event):
    config = make_config("web", cooldown_seconds=600)
    make_event(config, status=ScaleOutEvent.Status.SUCCEEDED, finished_at=timezone.now())
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.COOLDOWN
    assert "cooldown is 600 s" in decision.reason
    assert ScaleOutEvent.objects.count() == 1

    ScaleOutEvent.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    post_webhook(client, "web", firing_payload("web", fingerprint="aaaa"))
    assert ScalingDecision.objects.latest("id").outcome == Outcome.SCALE_OUT


def test_at_max_is_recorded_with_reason(client, webhook_settings, make_config, make_instances):
    config = make_config("web", max_instances=2, monitored_instances=[])
    make_instances(config, 2)
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.AT_MAX
    assert "2 instances running and 0 being created; the maximum is 2" in decision.reason
    assert ScaleOutEvent.objects.count() == 0


def test_the_inventory_counts_not_ip_allocations(client, webhook_settings, make_config, make_event):
    """2 adopted + 2 created in service is the maximum of 4; an address in use without an instance counts for
    nothing, nor does an instance that was lost or removed (its VM is gone; a failed one counts toward max, as its
    VM may still exist: events/tests/test_safety.py)."""
    config = make_config(
        "web", max_instances=4, cooldown_seconds=0, monitored_instances=["127.0.0.1:9100", "127.0.0.2:9100"]
    )
    earlier = make_event(config, status=ScaleOutEvent.Status.SUCCEEDED, finished_at=timezone.now())
    pool = IpPool.objects.create(
        name="lab", network="127.0.0.0/24", first_address="127.0.0.20", last_address="127.0.0.30"
    )
    IpAllocation.objects.create(pool=pool, address="127.0.0.29", state=IpAllocation.State.IN_USE, event=earlier)
    for address, state in (("127.0.0.21", "in_service"), ("127.0.0.22", "removed"), ("127.0.0.23", "lost")):
        ManagedInstance.objects.create(config=config, created_by_event=earlier, ip_address=address, state=state)
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.SCALE_OUT
    assert "3 instances running" in decision.reason

    ManagedInstance.objects.create(config=config, created_by_event=earlier, ip_address="127.0.0.24", state="in_service")
    ScaleOutEvent.objects.filter(config=config).update(status=ScaleOutEvent.Status.SUCCEEDED)
    post_webhook(client, "web", firing_payload("web", starts_at="2026-03-01T10:05:00Z"))
    decision = ScalingDecision.objects.latest("decided_at", "pk")
    assert decision.outcome == Outcome.AT_MAX
    assert "4 instances running and 0 being created" in decision.reason


def test_lost_and_removed_instances_do_not_count(client, webhook_settings, make_config, make_instances):
    from fleet.models import ManagedInstance

    config = make_config("web", max_instances=2, min_instances=0, cooldown_seconds=0, monitored_instances=[])
    make_instances(config, 1)
    make_instances(config, 3, state=ManagedInstance.State.LOST)
    make_instances(config, 2, state=ManagedInstance.State.REMOVED)
    post_webhook(client, "web", firing_payload("web"))
    assert ScaleOutEvent.objects.get().vm_count == 1


def test_instances_being_created_count_towards_max(client, webhook_settings, make_config, make_instances):
    from fleet.models import ManagedInstance

    config = make_config("web", max_instances=3, cooldown_seconds=0, monitored_instances=[])
    make_instances(config, 1)
    make_instances(config, 1, state=ManagedInstance.State.PENDING)
    make_instances(config, 1, state=ManagedInstance.State.PROVISIONING)
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.AT_MAX
    assert "1 instances running and 2 being created" in decision.reason


def test_already_scaling_when_an_event_is_active(client, webhook_settings, make_config, make_event):
    config = make_config("web", max_instances=10, cooldown_seconds=0)
    running = make_event(config, status=ScaleOutEvent.Status.TRIGGERED)
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.ALREADY_SCALING
    assert f"#{running.pk}" in decision.reason


def test_vm_count_never_exceeds_the_maximum(client, webhook_settings, make_config, make_instances):
    make_config("web", max_instances=3, scale_out_step=5, cooldown_seconds=0)  # one adopted instance
    post_webhook(client, "web", firing_payload("web"))
    assert ScaleOutEvent.objects.get().vm_count == 2


def test_a_not_scaled_alert_is_decided_again_when_repeated(client, webhook_settings, make_config):
    # Only a scale-out claims an alert: a repeat of an alert that hit the cooldown is decided afresh.
    config = make_config("web", enabled=False)
    post_webhook(client, "web", firing_payload("web"))
    config.enabled = True
    config.save()
    post_webhook(client, "web", firing_payload("web"))
    assert outcomes() == [Outcome.DISABLED, Outcome.SCALE_OUT]


def test_decisions_answer_says_why(client, webhook_settings, make_config):
    make_config("web", enabled=False)
    body = post_webhook(client, "web", firing_payload("web"))
    assert body.json()["notification"] == AlertNotification.objects.get().pk
    assert body.decisions[0]["reason"] == "Autoscaling of “web” is disabled."


def test_vms_of_a_scale_out_not_yet_recorded_count_as_being_created(
    client, webhook_settings, make_config, make_event, make_instances
):
    # The pipeline records its instances when it starts: until then the event's VM count is what is being created.
    config = make_config("web", max_instances=3, cooldown_seconds=0)  # one adopted instance
    make_event(config, status=ScaleOutEvent.Status.PENDING, vm_count=2)
    post_webhook(client, "web", firing_payload("web"))
    decision = ScalingDecision.objects.get()
    assert decision.outcome == Outcome.AT_MAX
    assert "1 instances running and 2 being created" in decision.reason
