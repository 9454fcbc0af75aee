"""The decider: the webhook stores and answers, the decider decides the waiting notifications behind the answer."""

from datetime import timedelta
from unittest import mock

from django.core.cache import cache
from django.utils import timezone

from events import intake
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, post_webhook

Outcome = ScalingDecision.Outcome


def outcomes(service):
    return list(ScalingDecision.objects.filter(service_name=service).order_by("pk").values_list("outcome", flat=True))


def bodies(service):
    """A burst: three alerts, each repeated, interleaved (the first one scales out, the others find it in
    progress), then a resolved one."""
    first, second, third = (firing_payload(service, fingerprint=f"{n:016x}") for n in (1, 2, 3))
    resolved = firing_payload(service, fingerprint=f"{4:016x}")
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    return [first, second, first, third, second, first, resolved, third]


def test_a_batch_decides_what_one_notification_at_a_time_decides(client, webhook_settings, make_config):
    make_config("one")
    make_config("batch")
    for body in bodies("one"):
        post_webhook(client, "one", body)  # decided at once, one by one
    for body in bodies("batch"):
        assert post_webhook(client, "batch", body, decide=False).status_code == 202
    assert AlertNotification.objects.filter(service_name="batch", decided_at__isnull=True).count() == 8
    assert intake.notifications_decide() == 8

    assert outcomes("batch") == outcomes("one")
    assert outcomes("one")[:3] == [Outcome.SCALE_OUT, Outcome.COOLDOWN, Outcome.DUPLICATE]
    assert ScaleOutEvent.objects.filter(service_name="batch").count() == 1
    assert not AlertNotification.objects.filter(decided_at__isnull=True).exists()
    assert set(AlertNotification.objects.values_list("config__service_name", flat=True)) == {"one", "batch"}


def test_the_webhook_wakes_the_decider_only_when_no_older_notification_waits(
    client, webhook_settings, make_config, django_capture_on_commit_callbacks
):
    make_config("web")

    def wakes():
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            post_webhook(client, "web", firing_payload("web"), decide=False)
        return [getattr(callback, "func", callback) for callback in callbacks] == [intake.decider_wake]

    with mock.patch("django_q.tasks.async_task") as queue:
        assert wakes() is True
        assert wakes() is False  # the decider queued for the first one reads on
        assert queue.call_count == 1
        intake.notifications_decide()
        assert intake.decider_queue_for_waiting() is False  # the sweep's net: nothing waits
        assert wakes() is True  # nothing waits before it
        # An older one that has waited too long no longer vouches for a decider (lost with its cluster, or its
        # decision failed and waits for the sweep): a newer one wakes one itself.
        stalled = timezone.now() - timedelta(seconds=intake.DECIDER_STALLED_SECONDS + 1)
        AlertNotification.objects.filter(decided_at__isnull=True).update(received_at=stalled)
        assert wakes() is True
        assert wakes() is False
        assert queue.call_count == 3


def test_the_insert_stores_what_the_model_would(client, webhook_settings, make_config):
    make_config("web")
    body = firing_payload("web")
    body["receiver"] = "vmautoscale-web"
    response = post_webhook(client, "web", body, decide=False)
    stored = AlertNotification.objects.get(pk=response.json()["notification"])
    assert (stored.service_name, stored.status, stored.receiver, stored.payload) == (
        "web",
        "firing",
        "vmautoscale-web",
        body,
    )
    assert stored.group_key == body["groupKey"]
    assert abs(stored.received_at - timezone.now()) < timedelta(seconds=5)
    assert stored.decided_at is None and stored.config_id is None


def test_one_decider_at_a_time(client, webhook_settings, make_config):
    make_config("web")
    post_webhook(client, "web", firing_payload("web"), decide=False)
    cache.set(intake.DECIDER_LOCK, "another decider", 60)
    try:
        assert intake.notifications_decide() == 0
        assert AlertNotification.objects.get().decided_at is None
    finally:
        cache.delete(intake.DECIDER_LOCK)
    assert intake.notifications_decide() == 1


def test_a_service_whose_decision_fails_waits_and_the_others_are_decided(client, webhook_settings, make_config):
    make_config("good")
    make_config("bad")
    post_webhook(client, "bad", firing_payload("bad"), decide=False)
    post_webhook(client, "good", firing_payload("good"), decide=False)
    real = intake._decide

    def failing(**kwargs):
        if kwargs["service_name"] == "bad":
            raise RuntimeError("boom")
        return real(**kwargs)

    with mock.patch.object(intake, "_decide", failing):
        assert intake.notifications_decide() == 1
    assert AlertNotification.objects.get(service_name="bad").decided_at is None
    assert not ScalingDecision.objects.filter(service_name="bad").exists()
    assert outcomes("good") == [Outcome.SCALE_OUT]
    assert intake.notifications_decide() == 1  # the next run (the sweep's) decides it
    assert outcomes("bad") == [Outcome.SCALE_OUT]
