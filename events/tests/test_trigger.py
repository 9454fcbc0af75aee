"""Starting the Jenkins build of an event, through the real client against the lab's Jenkins stand-in."""

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from common.clients import jenkins_client
from events import build_logs, callbacks, sweep, tasks, trigger
from events.models import EventAction, ScaleOutEvent

pytestmark = [pytest.mark.django_db, pytest.mark.lab]

Status = ScaleOutEvent.Status


def trigger_and_follow(event_id):
    """The trigger task, then the follow-up task it queues when the build has not started yet."""
    status = trigger.event_trigger(event_id=event_id)
    trigger.event_build_number_follow(event_id=event_id)
    return status


def build_requests(jenkins):
    return jenkins.calls(path_contains="/buildWithParameters", method="POST")


def test_trigger_starts_the_job_with_the_event_parameters(jenkins, jenkins_job, make_event, make_config):
    job = jenkins_job("web")
    event = make_event(make_config("web"), vm_count=2)
    assert trigger_and_follow(event.pk) == Status.TRIGGERED

    event.refresh_from_db()
    assert event.status == Status.TRIGGERED
    assert event.triggered_at is not None
    assert event.jenkins_job == job
    assert event.jenkins_queue_id is not None
    assert event.build_number == 1
    assert event.build_url.endswith(f"/job/{job}/1/")
    assert event.trigger_attempts == 1
    build = jenkins.build(job, 1)
    parameters = build["parameters"]
    assert parameters["EVENT_ID"] == str(event.pk)
    assert parameters["SERVICE_NAME"] == "web"
    assert parameters["VM_COUNT"] == "2"
    assert parameters["CALLBACK_URL"] == f"{settings.PORTAL_URL.rstrip('/')}/api/events/{event.pk}/callback"
    assert parameters["TEMPLATE_NAME"] == "tpl-events"
    # Only the hash of the token is stored; the token in the build opens this event's callbacks.
    token = parameters["CALLBACK_TOKEN"]
    assert len(token) >= 32 and token not in event.callback_token_hash
    assert callbacks.event_callback_authenticate(event_id=event.pk, token=token).pk == event.pk
    action = event.actions.get(step=EventAction.Step.TRIGGER)
    assert action.status == EventAction.Status.SUCCEEDED
    assert action.duration_seconds is not None


def test_jenkins_failing_then_recovering_triggers_exactly_once(jenkins, jenkins_job, make_event):
    job = jenkins_job("web")
    event = make_event()
    jenkins.fail_next(2, 503, path="buildWithParameters")

    assert trigger_and_follow(event.pk) == Status.TRIGGERED
    calls = build_requests(jenkins)
    assert [call["status"] for call in calls] == [503, 503, 201]
    event.refresh_from_db()
    assert event.trigger_attempts == 3
    assert event.build_number == 1
    details = event.actions.get(step=EventAction.Step.TRIGGER).details
    assert details["attempts"] == 3 and len(details["errors"]) == 2

    # A re-delivered task and the sweep do not start it again.
    assert trigger.event_trigger(event_id=event.pk) == Status.TRIGGERED
    ScaleOutEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(hours=1))
    tasks.event_sweep()
    assert len(build_requests(jenkins)) == 3
    assert list(jenkins.jobs()[job]["builds"]) == [1]


def test_jenkins_down_fails_the_event_saying_why(jenkins, jenkins_job, make_event, settings):
    jenkins_job("web")
    settings.EVENT_TRIGGER_ATTEMPTS = 3
    event = make_event()
    jenkins.fail_next(None, 503, path="buildWithParameters")
    try:
        assert trigger.event_trigger(event_id=event.pk) == Status.FAILED
    finally:
        jenkins.clear_faults()
    event.refresh_from_db()
    assert len(build_requests(jenkins)) == 3
    assert event.error.startswith("Jenkins could not be reached: ")
    assert "503" in event.error
    assert event.failed_step == EventAction.Step.TRIGGER
    assert event.finished_at is not None
    assert event.actions.get(step=EventAction.Step.TRIGGER).status == EventAction.Status.FAILED


def test_jenkins_unreachable_fails_the_event(jenkins, make_event, settings):
    from lab.core import free_port

    settings.JENKINS_URL = f"http://127.0.0.1:{free_port()}/"
    settings.EVENT_TRIGGER_ATTEMPTS = 2
    event = make_event()
    assert trigger.event_trigger(event_id=event.pk) == Status.FAILED
    event.refresh_from_db()
    assert event.error.startswith("Jenkins could not be reached: ")
    assert "could not be reached" in event.error
    assert event.trigger_attempts == 2


def test_missing_job_fails_at_once(jenkins, make_event):
    event = make_event()
    assert trigger.event_trigger(event_id=event.pk) == Status.FAILED
    event.refresh_from_db()
    assert event.trigger_attempts == 1
    assert "Jenkins refused to start job vmautoscale-web" in event.error


def test_a_crashed_trigger_is_taken_over_without_a_second_build(jenkins, jenkins_job, make_event, settings):
    job = jenkins_job("web")
    event = make_event()
    # An earlier run claimed the event, started the build and died before recording it.
    client = jenkins_client()
    queue_id = client.build_job(job, {"EVENT_ID": str(event.pk)})
    deadline = time.monotonic() + 5
    while client.queue_item(queue_id).build_number is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ScaleOutEvent.objects.filter(pk=event.pk).update(trigger_claimed_at=timezone.now() - timedelta(seconds=30))

    # While the claim is fresh, nobody else triggers.
    assert trigger.event_trigger(event_id=event.pk) == Status.PENDING
    ScaleOutEvent.objects.filter(pk=event.pk).update(trigger_claimed_at=timezone.now() - timedelta(hours=1))
    assert trigger.event_trigger(event_id=event.pk) == Status.TRIGGERED
    event.refresh_from_db()
    assert event.build_number == 1
    assert len(build_requests(jenkins)) == 1


def test_sweep_requeues_events_left_pending(make_event):
    fresh = make_event()
    stale = make_event(config=fresh.config)
    ScaleOutEvent.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    claimed = make_event(config=fresh.config)
    ScaleOutEvent.objects.filter(pk=claimed.pk).update(
        created_at=timezone.now() - timedelta(minutes=5), trigger_claimed_at=timezone.now()
    )
    result = sweep.event_sweep()
    assert result["requeued"] == 1
    assert [(q.task["func"], q.task["kwargs"]["event_id"]) for q in OrmQ.objects.all()] == [
        (trigger.event_trigger, stale.pk)
    ]


def test_log_is_stored_when_the_event_ends_keeping_the_tail(jenkins, jenkins_job, make_event, settings):
    job = jenkins_job("web")
    jenkins.set_build_behaviour(duration=0.1, log_lines=[f"line {n:04d}" for n in range(400)])
    event = make_event()
    trigger_and_follow(event.pk)
    event.refresh_from_db()
    jenkins.wait_build(job, event.build_number)

    settings.EVENT_BUILD_LOG_MAX_BYTES = 1000
    assert build_logs.event_build_log_fetch(event_id=event.pk) is True
    event.refresh_from_db()
    assert event.build_log_truncated is True
    assert len(event.build_log.encode()) <= 1000
    assert event.build_log.rstrip().endswith("Finished: SUCCESS")
    assert "line 0000" not in event.build_log
    assert event.build_log_fetched_at is not None

    settings.EVENT_BUILD_LOG_MAX_BYTES = 1_000_000
    build_logs.event_build_log_fetch(event_id=event.pk)
    event.refresh_from_db()
    assert event.build_log_truncated is False
    assert "line 0000" in event.build_log


def test_sweep_queues_log_fetch_for_finished_builds(make_event):
    done = make_event(status=Status.SUCCEEDED, finished_at=timezone.now(), build_number=4)
    make_event(config=done.config, status=Status.SUCCEEDED, finished_at=timezone.now())  # no build: nothing to fetch
    result = sweep.event_sweep()
    assert result["logs_queued"] == 1
    queued = OrmQ.objects.get().task
    assert queued["func"] is build_logs.event_build_log_fetch and queued["kwargs"]["event_id"] == done.pk


def test_the_sweep_runs_every_minute():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="events.tasks.event_sweep")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1


def test_sweep_fails_an_event_whose_build_ended_without_reporting(
    jenkins, jenkins_job, make_event, make_config, settings
):
    settings.EVENT_PENDING_SWEEP_AFTER = 1
    job = jenkins_job("web")
    jenkins_job("db")
    jenkins.set_build_behaviour(job=job, duration=0.05, result="ABORTED")
    jenkins.set_build_behaviour(job="vmautoscale-db", duration=None)  # runs until finished by hand
    aborted = make_event(make_config("web"))
    running = make_event(make_config("db"))
    for event in (aborted, running):
        trigger_and_follow(event.pk)
        EventAction.objects.create(event=event, step="vm_clone", status="running", started_at=timezone.now())
        ScaleOutEvent.objects.filter(pk=event.pk).update(status=Status.RUNNING)
        event.refresh_from_db()
    jenkins.wait_build(job, aborted.build_number)

    assert sweep.event_sweep()["ended_without_report"] == 0  # within the grace period
    time.sleep(1.2)
    assert sweep.event_sweep()["ended_without_report"] == 1
    aborted.refresh_from_db()
    assert aborted.status == Status.FAILED
    assert f"build #{aborted.build_number} ended ABORTED without reporting" in aborted.error
    assert aborted.failed_step == "vm_clone"
    assert aborted.actions.get(step="vm_clone").status == EventAction.Status.FAILED
    running.refresh_from_db()
    assert running.status == Status.RUNNING
    jenkins.finish_build("vmautoscale-db", running.build_number)


def test_a_slow_queue_is_followed_by_its_own_task(jenkins, jenkins_job, make_event):
    jenkins_job("web")
    jenkins.set_build_behaviour(queue_delay=0.5)
    event = make_event()
    assert trigger.event_trigger(event_id=event.pk) == Status.TRIGGERED
    event.refresh_from_db()
    assert event.build_number is None and event.jenkins_queue_id is not None
    queued = OrmQ.objects.get().task
    assert queued["func"] is trigger.event_build_number_follow and queued["kwargs"]["event_id"] == event.pk
    trigger.event_build_number_follow(event_id=event.pk)
    event.refresh_from_db()
    assert event.build_number == 1


def test_sweep_finishes_a_trigger_step_a_killed_trigger_left_running(make_event, settings):
    # The trigger died after Jenkins accepted the build; the build's reports moved the event on meanwhile.
    long_ago = timezone.now() - timedelta(seconds=settings.EVENT_TRIGGER_LEASE + 1)
    reported = make_event(status=Status.RUNNING, trigger_claimed_at=long_ago)
    EventAction.objects.create(event=reported, step=EventAction.Step.TRIGGER, status="running", started_at=long_ago)
    # Still pending: its trigger may be alive (or is taken over by the re-queue): left alone.
    pending = make_event(config=reported.config, trigger_claimed_at=long_ago)
    EventAction.objects.create(event=pending, step=EventAction.Step.TRIGGER, status="running", started_at=long_ago)
    # A trigger that started a moment ago: left alone too.
    recent = make_event(config=reported.config, status=Status.TRIGGERED, trigger_claimed_at=timezone.now())
    EventAction.objects.create(event=recent, step=EventAction.Step.TRIGGER, status="running", started_at=timezone.now())

    assert sweep.event_sweep()["trigger_steps_finished"] == 1
    step = reported.actions.get(step=EventAction.Step.TRIGGER)
    assert step.status == EventAction.Status.SUCCEEDED and step.finished_at is not None and step.message
    assert pending.actions.get().status == recent.actions.get().status == EventAction.Status.RUNNING
    assert sweep.event_sweep()["trigger_steps_finished"] == 0


def test_a_crashed_trigger_whose_build_still_waits_in_the_queue_is_taken_over_without_a_second_build(
    jenkins, jenkins_job, make_event
):
    job = jenkins_job("web")
    jenkins.set_build_behaviour(queue_delay=3)  # no executor free for a while
    event = make_event()
    # An earlier run claimed the event, requested the build and died before recording it: no build yet.
    client = jenkins_client()
    queue_id = client.build_job(job, {"EVENT_ID": str(event.pk)})
    assert [item.id for item in client.queued(job)] == [queue_id] and client.builds(job) == []
    ScaleOutEvent.objects.filter(pk=event.pk).update(trigger_claimed_at=timezone.now() - timedelta(hours=1))

    assert trigger.event_trigger(event_id=event.pk) == Status.TRIGGERED
    event.refresh_from_db()
    assert event.jenkins_queue_id == queue_id and len(build_requests(jenkins)) == 1
    assert "queue item" in event.actions.get(step=EventAction.Step.TRIGGER).message
    # Its build number comes when the build starts (the follow task queued for it).
    trigger.event_build_number_follow(event_id=event.pk)
    event.refresh_from_db()
    assert event.build_number == 1 and len(client.builds(job)) == 1
