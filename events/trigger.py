"""Starting an event's Jenkins build: the trigger claim, the build request with retries, following the queue item
to its build number.

A conditional UPDATE (the trigger claim) makes sure only one task run ever calls Jenkins for an event; a claim left
by a run that died is taken over after EVENT_TRIGGER_LEASE seconds, and the new run first looks for a build that
already carries the event's id.
"""

import contextvars
import logging
import secrets
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_noop
from django_q.brokers import get_broker
from django_q.tasks import async_task

from common.clients import jenkins_client
from common.faults import fault_point
from common.messages import Message
from events.models import EventAction, ScaleOutEvent
from events.status import (
    CALLBACK_PATH,
    Status,
    StepStatus,
    callback_token_hash,
    event_fail_pending,
    event_status_set,
    step_finish,
    step_status_set,
)
from integrations.errors import IntegrationError
from pipeline import contract

logger = logging.getLogger(__name__)


# The event ids a `triggers_queued_together` block collects instead of queueing each at once.
_collected = contextvars.ContextVar("events_trigger_collected", default=None)


def event_trigger_queue(*, event_id):
    """Queue the trigger of an event (callers that write wrap this in transaction.on_commit). The task is the service
    function itself, named by the function (a rename fails here, not in a worker); it is safe to run twice.
    Inside `triggers_queued_together`, the event joins the block's batch instead."""
    fault_point("decision.event_created")
    collected = _collected.get()
    if collected is not None:
        collected.append(event_id)
        return
    async_task(event_trigger, event_id=event_id, task_name=f"event-trigger-{event_id}")


def event_triggers_queue(*, event_ids):
    """Queue the triggers of many events through one broker in one transaction: with the ORM broker, one commit
    for all of them instead of one commit (and a connection check) each."""
    if not event_ids:
        return
    broker = get_broker()
    with transaction.atomic():
        for event_id in event_ids:
            async_task(event_trigger, event_id=event_id, task_name=f"event-trigger-{event_id}", broker=broker)


@contextmanager
def triggers_queued_together():
    """Collect the triggers queued inside the block (by the on_commit hooks of the transactions it commits) and
    queue them together when it ends, also when it ends with an error: what committed is triggered."""
    collected = []
    token = _collected.set(collected)
    try:
        yield
    finally:
        _collected.reset(token)
        event_triggers_queue(event_ids=collected)


def event_build_number_follow_queue(*, event_id):
    """Queue the task that waits for an event's queue item to become a build."""
    async_task(event_build_number_follow, event_id=event_id, task_name=f"event-follow-{event_id}")


def event_callback_url(*, event_id):
    return settings.PORTAL_URL.rstrip("/") + CALLBACK_PATH.format(event_id=event_id)


def event_jenkins_parameters(*, event, token):
    """The build parameters of a scale-out (the Jenkins contract, pipeline/contract.py)."""
    config = event.config
    return contract.build_parameters(
        event_id=event.pk,
        service_name=event.service_name,
        vm_count=event.vm_count,
        callback_url=event_callback_url(event_id=event.pk),
        callback_token=token,
        template_name=config.template.name,
        vm_name_pattern=config.vm_name_pattern,
        datacenter=config.datacenter,
        cluster=config.cluster,
        resource_pool=config.resource_pool,
        folder=config.folder,
        datastore=config.datastore,
        network=config.network,
        ip_pool_id=config.ip_pool_id,
        f5_pool=config.f5_pool,
        f5_partition=config.f5_partition,
        f5_member_port=config.f5_member_port,
        action=event.action,
        instance_ids=",".join(str(pk) for pk in event.instances_removed.order_by("pk").values_list("pk", flat=True)),
        drain_timeout=getattr(config, "drain_timeout_seconds", None),
    )


def _claim_trigger(event_id):
    """Take the right to start this event's build. Returns None (not ours), "fresh" or "taken_over"."""
    now = timezone.now()
    pending = ScaleOutEvent.objects.filter(pk=event_id, status=Status.PENDING)
    if pending.filter(trigger_claimed_at__isnull=True).update(trigger_claimed_at=now):
        return "fresh"
    expired = now - timedelta(seconds=settings.EVENT_TRIGGER_LEASE)
    if pending.filter(trigger_claimed_at__lt=expired).update(trigger_claimed_at=now):
        return "taken_over"
    return None


def _trigger_step_start(event_id, started):
    fresh = {"started_at": started, "finished_at": None, "message": ""}
    if not step_status_set(event_id=event_id, step=EventAction.Step.TRIGGER, new=StepStatus.RUNNING, **fresh):
        # The run that died left its trigger step running: it starts again now (no change of status).
        EventAction.objects.filter(event_id=event_id, step=EventAction.Step.TRIGGER, status=StepStatus.RUNNING).update(
            **fresh
        )


def event_trigger(*, event_id):
    """Start the Jenkins build of a pending event, at most once; returns the event's status afterwards.

    Jenkins errors are retried with a doubling back-off (EVENT_TRIGGER_ATTEMPTS, EVENT_TRIGGER_BACKOFF); then the
    event fails saying why. A claim left by a run that died is taken over after EVENT_TRIGGER_LEASE seconds, and the
    new run first looks for a build that already carries this event's id, so a crash never starts a second build.
    """
    claim = _claim_trigger(event_id)
    if claim is None:
        return ScaleOutEvent.objects.filter(pk=event_id).values_list("status", flat=True).first()
    event = ScaleOutEvent.objects.select_related("config__template").get(pk=event_id)
    job = event.jenkins_job or event.config.jenkins_job_name
    client = jenkins_client()
    _trigger_step_start(event.pk, timezone.now())
    finish = {"event_id": event.pk, "step": EventAction.Step.TRIGGER}

    if claim == "taken_over":
        existing = _build_for_event(client, job, event.pk)
        if existing is not None:
            _mark_triggered(event, job, queue_id=None, build=existing)
            step_finish(
                **finish,
                status=StepStatus.SUCCEEDED,
                message=Message(
                    gettext_noop("Found build #%(n)d started by an earlier attempt."), {"n": existing.number}
                ),
            )
            return Status.TRIGGERED
        # Or still waiting for an executor: Jenkins' queue holds the request with the event's id.
        waiting = _queued_for_event(client, job, event.pk)
        if waiting is not None:
            _mark_triggered(event, job, queue_id=waiting.id, build=None)
            step_finish(
                **finish,
                status=StepStatus.SUCCEEDED,
                message=Message(
                    gettext_noop("Found queue item %(queue)s requested by an earlier attempt."), {"queue": waiting.id}
                ),
            )
            event_build_number_follow_queue(event_id=event.pk)
            return Status.TRIGGERED

    token = secrets.token_urlsafe(32)
    ScaleOutEvent.objects.filter(pk=event.pk).update(callback_token_hash=callback_token_hash(token), jenkins_job=job)
    parameters = event_jenkins_parameters(event=event, token=token)
    errors = []
    queue_id = None
    for attempt in range(settings.EVENT_TRIGGER_ATTEMPTS):
        ScaleOutEvent.objects.filter(pk=event.pk).update(trigger_attempts=F("trigger_attempts") + 1)
        try:
            queue_id = client.build_job(job, parameters)
            break
        except IntegrationError as exc:
            errors.append(str(exc))
            logger.warning("event %s: Jenkins trigger attempt %d failed: %s", event.pk, attempt + 1, exc)
            if exc.permanent or attempt + 1 == settings.EVENT_TRIGGER_ATTEMPTS:
                message = Message(gettext_noop("Jenkins could not be reached: %(why)s"), {"why": str(exc)})
                if exc.permanent:
                    message = Message(
                        gettext_noop("Jenkins refused to start job %(job)s: %(why)s"), {"job": job, "why": str(exc)}
                    )
                event_fail_pending(event_id=event.pk, message=message)
                step_finish(
                    **finish,
                    status=StepStatus.FAILED,
                    message=message,
                    details={"attempts": attempt + 1, "errors": errors},
                )
                return ScaleOutEvent.objects.filter(pk=event.pk).values_list("status", flat=True).first()
            time.sleep(settings.EVENT_TRIGGER_BACKOFF * (2**attempt))

    fault_point("trigger.build_requested")
    _mark_triggered(event, job, queue_id=queue_id, build=None)
    step_finish(
        **finish,
        status=StepStatus.SUCCEEDED,
        message=Message(gettext_noop("Build requested from Jenkins (queue item %(queue)s)."), {"queue": queue_id}),
        details={"attempts": len(errors) + 1, "errors": errors, "queue_id": queue_id},
    )
    # One look at the queue item; waiting for an executor is another task's job, so that this worker is free for
    # the next trigger at once.
    event_queue_follow(client=client, event_id=event.pk, job=job, queue_id=queue_id, wait=0)
    status, number = ScaleOutEvent.objects.filter(pk=event.pk).values_list("status", "build_number").first()
    if number is None and status in ScaleOutEvent.ACTIVE_STATUSES:
        event_build_number_follow_queue(event_id=event.pk)
    return status


def event_build_number_follow(*, event_id):
    """Follow a triggered event's queue item to its build number for up to EVENT_QUEUE_WAIT seconds."""
    event = ScaleOutEvent.objects.filter(pk=event_id).only("jenkins_job", "jenkins_queue_id", "build_number").first()
    if event is None or event.build_number is not None or event.jenkins_queue_id is None:
        return
    event_queue_follow(
        client=jenkins_client(),
        event_id=event.pk,
        job=event.jenkins_job,
        queue_id=event.jenkins_queue_id,
        wait=settings.EVENT_QUEUE_WAIT,
    )


def _mark_triggered(event, job, *, queue_id, build):
    now = timezone.now()
    fields = {"jenkins_job": job}
    if queue_id is not None:
        fields["jenkins_queue_id"] = queue_id
    if build is not None:
        fields.update(build_number=build.number, build_url=build.url or "")
    ScaleOutEvent.objects.filter(pk=event.pk).update(**fields)
    # A fast pipeline may already have reported "running": the table never moves an event backwards.
    event_status_set(event_id=event.pk, new=Status.TRIGGERED, triggered_at=now)
    ScaleOutEvent.objects.filter(pk=event.pk, triggered_at__isnull=True).update(triggered_at=now)


def _build_for_event(client, job, event_id):
    """A recent build of the job whose EVENT_ID parameter is this event, or None."""
    try:
        builds = client.builds(job, 20)
    except IntegrationError as exc:
        if exc.code == "not_found":
            return None
        raise
    for build in builds:
        parameters = build.parameters or {}
        if str(parameters.get("EVENT_ID", "")) == str(event_id):
            return build
    return None


def _queued_for_event(client, job, event_id):
    """The job's queue item whose EVENT_ID parameter is this event, or None."""
    for item in client.queued(job):
        if not item.cancelled and str((item.parameters or {}).get("EVENT_ID", "")) == str(event_id):
            return item
    return None


def event_queue_follow(*, client, event_id, job, queue_id, wait):
    """Follow a queue item to its build number for up to `wait` seconds; the sweep fills it in later if not."""
    deadline = time.monotonic() + wait
    while True:
        try:
            item = client.queue_item(queue_id)
        except IntegrationError as exc:
            logger.info("event %s: queue item %s not readable: %s", event_id, queue_id, exc)
            if exc.code == "not_found":
                # Jenkins forgets queue items a few minutes after they start: find the build by its parameter.
                try:
                    build = _build_for_event(client, job, event_id)
                except IntegrationError as again:
                    logger.info("event %s: builds of %s not readable: %s", event_id, job, again)
                    return
                if build is not None:
                    ScaleOutEvent.objects.filter(pk=event_id, build_number__isnull=True).update(
                        build_number=build.number, build_url=build.url or ""
                    )
            return
        if item.build_number is not None:
            ScaleOutEvent.objects.filter(pk=event_id, build_number__isnull=True).update(
                build_number=item.build_number, build_url=item.build_url or ""
            )
            return
        if item.cancelled:
            message = Message(gettext_noop("The Jenkins queue item was cancelled: %(why)s"), {"why": item.why or "-"})
            # Only an event whose build never started: a running pipeline reports its own end.
            event_status_set(
                event_id=event_id,
                new=Status.CANCELLED,
                only_from=(Status.PENDING, Status.TRIGGERED),
                error=message,
                finished_at=timezone.now(),
            )
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)
