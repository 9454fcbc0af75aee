"""The periodic sweep: events whose trigger or build was lost, missing build numbers, logs not fetched yet."""

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_noop

from common.clients import jenkins_client
from common.messages import Message
from events import intake
from events.build_logs import event_build_log_fetch_queue
from events.models import EventAction, ScaleOutEvent
from events.status import Status, StepStatus, event_fail_active, step_finish
from events.trigger import event_queue_follow, event_trigger_queue
from fleet import services as fleet_services
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)


def event_sweep():
    """Periodic: queue the decider for notifications left waiting, re-queue events left pending, fill in missing
    build numbers, fail events whose build ended without a final report, finish trigger steps a killed trigger
    left running, and queue log fetches of finished builds."""
    now = timezone.now()
    stale = ScaleOutEvent.objects.filter(status=Status.PENDING).filter(
        Q(trigger_claimed_at__isnull=True, created_at__lt=now - timedelta(seconds=settings.EVENT_PENDING_SWEEP_AFTER))
        | Q(trigger_claimed_at__lt=now - timedelta(seconds=settings.EVENT_TRIGGER_LEASE))
    )
    requeued = list(stale.values_list("pk", flat=True)[:500])
    for event_id in requeued:
        event_trigger_queue(event_id=event_id)
    decider_queued = intake.decider_queue_for_waiting()

    numbered = 0
    waiting = ScaleOutEvent.objects.filter(
        status__in=[Status.TRIGGERED, Status.RUNNING], build_number__isnull=True, jenkins_queue_id__isnull=False
    ).values_list("pk", "jenkins_job", "jenkins_queue_id")[:100]
    if waiting:
        client = jenkins_client()
        for event_id, job, queue_id in waiting:
            try:
                event_queue_follow(client=client, event_id=event_id, job=job, queue_id=queue_id, wait=0)
            except IntegrationError as exc:
                logger.warning("sweep: event %s build number not found: %s", event_id, exc)
                continue
            numbered += 1

    silent = _builds_ended_silently(now)
    trigger_steps = _trigger_steps_left_running(now)

    logs = list(
        ScaleOutEvent.objects.filter(
            status__in=ScaleOutEvent.FINAL_STATUSES,
            build_number__isnull=False,
            build_log_fetched_at__isnull=True,
            finished_at__gte=now - timedelta(days=1),
        ).values_list("pk", flat=True)[:100]
    )
    for event_id in logs:
        event_build_log_fetch_queue(event_id=event_id)
    return {
        "requeued": len(requeued),
        "decider_queued": decider_queued,
        "build_numbers_checked": numbered,
        "ended_without_report": silent,
        "trigger_steps_finished": trigger_steps,
        "logs_queued": len(logs),
    }


def _trigger_steps_left_running(now):
    """Finish the trigger steps of events that are past pending while their step still runs: the trigger died after
    Jenkins had accepted the build (the portal process was killed), and the build's own reports moved the event on.
    The build did start, so the step succeeded."""
    stale = now - timedelta(seconds=settings.EVENT_TRIGGER_LEASE)
    left = list(
        EventAction.objects.filter(step=EventAction.Step.TRIGGER, status=StepStatus.RUNNING, started_at__lt=stale)
        .exclude(event__status=Status.PENDING)
        .values_list("event_id", flat=True)[:100]
    )
    message = Message(gettext_noop("The build started, but the trigger that requested it stopped before recording it."))
    return sum(
        bool(
            step_finish(event_id=event_id, step=EventAction.Step.TRIGGER, status=StepStatus.SUCCEEDED, message=message)
        )
        for event_id in left
    )


def _builds_ended_silently(now):
    """Fail running events whose Jenkins build ended (EVENT_PENDING_SWEEP_AFTER seconds ago or more) without
    reporting a final status: the agent died, the build was aborted, or the last callback never arrived."""
    candidates = list(
        ScaleOutEvent.objects.filter(
            status__in=[Status.TRIGGERED, Status.RUNNING],
            build_number__isnull=False,
            updated_at__lt=now - timedelta(seconds=settings.EVENT_PENDING_SWEEP_AFTER),
        ).values_list("pk", "jenkins_job", "build_number")[:100]
    )
    if not candidates:
        return 0
    client = jenkins_client()
    grace = timedelta(seconds=settings.EVENT_PENDING_SWEEP_AFTER)
    ended = 0
    for event_id, job, number in candidates:
        try:
            build = client.build(job, number)
        except IntegrationError as exc:
            if exc.code != "not_found":
                logger.warning("sweep: build #%s of %s not readable: %s", number, job, exc)
                continue
            message = Message(
                gettext_noop("Jenkins no longer has build #%(n)d, and the pipeline never reported a final status."),
                {"n": number},
            )
        else:
            if build.building or (
                build.timestamp and build.timestamp + timedelta(milliseconds=build.duration_ms) > now - grace
            ):
                continue
            message = Message(
                gettext_noop("Jenkins build #%(n)d ended %(result)s without reporting the event's final status."),
                {"n": number, "result": build.result or "?"},
            )
        with transaction.atomic():
            if event_fail_active(event_id=event_id, message=message):
                fleet_services.event_instances_fail(event_id=event_id, reason=message)
                transaction.on_commit(partial(event_build_log_fetch_queue, event_id=event_id))
                ended += 1
    return ended
