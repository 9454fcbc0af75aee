"""Fetching an event's Jenkins console log and keeping its tail."""

import time

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from common.clients import jenkins_client
from events.models import ScaleOutEvent
from integrations.errors import IntegrationError


def event_build_log_fetch_queue(*, event_id):
    """Queue the fetch of an event's build log: the service function itself is the task (safe to run twice)."""
    async_task(event_build_log_fetch, event_id=event_id, task_name=f"event-log-{event_id}")


def build_log_cap(*, text, max_bytes):
    """The tail of `text` that fits in max_bytes (UTF-8), and whether anything was cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text, False
    return data[-max_bytes:].decode("utf-8", errors="ignore"), True


def event_build_log_fetch(*, event_id, wait=30.0):
    """Store the console log of an event's build (the tail, capped). Waits a little for the build to end.

    The log is marked fetched only once Jenkins says the build is over (or has discarded it); otherwise the
    sweep fetches it again.
    """
    event = ScaleOutEvent.objects.filter(pk=event_id).only("pk", "jenkins_job", "build_number").first()
    if event is None or not event.build_number or not event.jenkins_job:
        return False
    client = jenkins_client()
    deadline = time.monotonic() + wait
    finished = False
    try:
        while True:
            if not client.build(event.jenkins_job, event.build_number).building:
                finished = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        text = client.build_log(event.jenkins_job, event.build_number)
    except IntegrationError as exc:
        if exc.code == "not_found":
            ScaleOutEvent.objects.filter(pk=event_id).update(build_log_fetched_at=timezone.now())
            return False
        raise
    log, truncated = build_log_cap(text=text, max_bytes=settings.EVENT_BUILD_LOG_MAX_BYTES)
    fields = {"build_log": log, "build_log_truncated": truncated}
    if finished:
        fields["build_log_fetched_at"] = timezone.now()
    ScaleOutEvent.objects.filter(pk=event_id).update(**fields)
    return finished
