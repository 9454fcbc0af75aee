"""Alert intake, scaling decisions, scale-out events, Jenkins triggering, pipeline callbacks and build logs.

Every write of the events app happens here. Doors (the webhook and API views, the admin, django-q tasks) call
these functions and do nothing else.

How a notification becomes an event: `alert_notification_receive` stores the notification and, for each alert
whose own status is firing, `_decide` runs under a row lock on the service's config (SELECT ... FOR UPDATE), so
decisions for one service are serialized across threads and processes. A scale-out creates a `ScaleOutEvent` and
claims the alert's `dedup_key` (unique) in one savepoint; a second process deciding the same alert at the same
moment hits the unique constraint and records "duplicate". On commit, `events.tasks.event_trigger` starts the
Jenkins job; a conditional UPDATE (the trigger claim) makes sure only one task run ever calls Jenkins for an event.
"""

import hashlib
import hmac
import logging
import secrets
import time
from base64 import b64decode
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, F, Min, OuterRef, Q, Subquery, Sum, Value
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from autoscaling.models import AutoscalingConfig, IpAllocation
from common.clients import jenkins_client
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
from integrations.errors import IntegrationError
from pipeline import contract

logger = logging.getLogger(__name__)

Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome
StepStatus = EventAction.Status

# --- the state machines (the only place that says which changes are possible) --------------------------------
EVENT_TRANSITIONS = {
    Status.PENDING: {
        Status.TRIGGERED,
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.ROLLED_BACK,
        Status.CANCELLED,
    },
    Status.TRIGGERED: {Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.CANCELLED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.CANCELLED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
    Status.ROLLED_BACK: set(),
    Status.CANCELLED: set(),
}
# A step may be reported as started, then finished once; a failed step may start again (a stage retried).
STEP_TRANSITIONS = {
    None: {StepStatus.RUNNING, StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED},
    StepStatus.RUNNING: {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED},
    StepStatus.FAILED: {StepStatus.RUNNING},
    StepStatus.SUCCEEDED: set(),
    StepStatus.SKIPPED: set(),
}
# Statuses the pipeline may report; the portal sets pending, triggered and cancelled itself.
CALLBACK_EVENT_STATUSES = (Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK)
CALLBACK_STEPS = tuple(step for step in EventAction.Step.values if step != EventAction.Step.TRIGGER)

# Where the pipeline reports; the pipeline appends "/status" or "/step".
CALLBACK_PATH = "/api/events/{event_id}/callback"


class CallbackRefused(Exception):
    """A pipeline callback is not allowed: `status_code` is 401, 403, 404 or 409 and the message says why."""

    def __init__(self, message, *, status_code):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


# --- names and counts ----------------------------------------------------------------------------------------
def config_instance_count(*, config):
    """How many instances a service runs now, counted as its Prometheus targets are made: the config's monitored
    instances plus the VMs earlier scale-outs put in use (their IP allocations in use)."""
    hosts = {target.rsplit(":", 1)[0] for target in config.monitored_instances or []}
    added = (
        IpAllocation.objects.filter(state=IpAllocation.State.IN_USE, event__config=config)
        .exclude(address__in=hosts)
        .count()
    )
    return len(config.monitored_instances or []) + added


def _token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


# --- webhook authentication ----------------------------------------------------------------------------------
def webhook_authenticate(*, authorization):
    """True when the Authorization header carries the webhook's bearer token or basic credentials."""
    scheme, _sep, credential = (authorization or "").partition(" ")
    scheme = scheme.lower()
    credential = credential.strip()
    if scheme == "bearer" and credential and settings.WEBHOOK_TOKEN:
        return hmac.compare_digest(credential.encode(), settings.WEBHOOK_TOKEN.encode())
    if scheme == "basic" and credential and settings.WEBHOOK_BASIC_USER and settings.WEBHOOK_BASIC_PASSWORD:
        try:
            user, _colon, password = b64decode(credential, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(user.encode(), settings.WEBHOOK_BASIC_USER.encode())
        password_ok = hmac.compare_digest(password.encode(), settings.WEBHOOK_BASIC_PASSWORD.encode())
        return user_ok and password_ok
    return False


# --- intake and decisions ------------------------------------------------------------------------------------
def alert_dedup_key(*, service_name, group_key, fingerprint, starts_at):
    """One alert instance: Alertmanager repeats and HA peers send the same group key, fingerprint and start."""
    raw = "\x00".join([service_name, group_key, fingerprint, starts_at.isoformat()])
    return hashlib.sha256(raw.encode()).hexdigest()


def alert_notification_receive(*, service_name, payload, raw_payload):
    """Store one webhook delivery and decide for each of its alerts; returns (notification, [decisions]).

    `payload` is the validated v4 body (datetimes parsed), `raw_payload` the body as received (stored as is).
    """
    resolved = [alert for alert in payload["alerts"] if alert["status"] == "resolved"]
    firing = [alert for alert in payload["alerts"] if alert["status"] == "firing"]
    dedup_keys = [
        alert_dedup_key(
            service_name=service_name,
            group_key=payload["groupKey"],
            fingerprint=alert["fingerprint"],
            starts_at=alert["startsAt"],
        )
        for alert in firing
    ]
    with transaction.atomic():
        # Firing alerts are decided under the config's row lock, taken first so that one query does both. A lone
        # firing alert (the usual delivery) also learns in that query whether it was already decided.
        config = _config_for_decision(
            service_name, lock=bool(firing), dedup_key=dedup_keys[0] if len(firing) == 1 else None
        )
        notification = AlertNotification.objects.create(
            service_name=service_name,
            config=config,
            status=payload["status"],
            group_key=payload["groupKey"],
            receiver=payload.get("receiver", ""),
            payload=raw_payload,
        )
        decisions = []
        if resolved:
            decisions += ScalingDecision.objects.bulk_create(
                ScalingDecision(
                    outcome=Outcome.RESOLVED,
                    reason=_("The alert is resolved; resolved alerts never scale."),
                    **_alert_fields(notification, service_name, config, alert),
                )
                for alert in resolved
            )
        for alert, dedup_key in zip(firing, dedup_keys, strict=True):
            decisions.append(
                _decide(
                    config=config,
                    service_name=service_name,
                    fields=_alert_fields(notification, service_name, config, alert),
                    dedup_key=dedup_key,
                    alert=alert,
                )
            )
    return notification, decisions


def scale_out_request(*, service_name, user, vm_count=None, reason=""):
    """An operator's manual scale-out; the same decisions as an alert. Returns the ScalingDecision."""
    with transaction.atomic():
        config = _config_for_decision(service_name, lock=True)
        return _decide(
            config=config,
            service_name=service_name,
            fields={"service_name": service_name, "config": config, "alert_name": ""},
            dedup_key=None,
            user=user,
            vm_count=vm_count,
            reason=reason,
        )


# What a decision reads of a config: loading only this keeps the locked read small.
DECISION_FIELDS = (
    "id",
    "service_name",
    "enabled",
    "max_instances",
    "scale_out_step",
    "cooldown_seconds",
    "monitored_instances",
)


def _config_for_decision(service_name, *, lock, dedup_key=None):
    configs = AutoscalingConfig.objects.filter(service_name=service_name).only(*DECISION_FIELDS)
    if dedup_key and connection.features.has_select_for_update:
        # Read in the locking statement, so possibly before another process committed its decision of this alert:
        # a decision found here is final (the alert is a duplicate); none found is re-checked after the lock. Only
        # where rows are locked (PostgreSQL): SQLite serialises writers anyway.
        configs = configs.annotate(
            decided_event=Subquery(ScalingDecision.objects.filter(dedup_key=dedup_key).values("event_id")[:1])
        )
    if lock:
        configs = configs.select_for_update(of=("self",))
    return configs.first()


def _alert_fields(notification, service_name, config, alert):
    return {
        "notification": notification,
        "service_name": service_name,
        "config": config,
        "alert_name": alert["labels"].get("alertname", "")[:200],
        "fingerprint": alert["fingerprint"],
        "starts_at": alert["startsAt"],
        "group_key": notification.group_key,
    }


def _decide(*, config, service_name, fields, dedup_key, alert=None, user=None, vm_count=None, reason=""):
    """Decide one alert (or manual request) for a config the caller has locked; record and return the decision."""

    def record(outcome, why, **extra):
        return ScalingDecision.objects.create(outcome=outcome, reason=why, **fields, **extra)

    if config is None:
        return record(
            Outcome.UNKNOWN_SERVICE, _("No autoscaling config is named “%(service)s”.") % {"service": service_name}
        )
    if getattr(config, "decided_event", None) is not None:
        return _record_duplicate(record, config.decided_event)
    # One round trip, after the lock: the event an earlier decision of this same alert created, and when the
    # config's newest event began (duplicates and cooldowns are most of the traffic).
    earlier, last_created = (
        AutoscalingConfig.objects.filter(pk=config.pk)
        .annotate(
            earlier=Subquery(ScalingDecision.objects.filter(dedup_key=dedup_key).values("event_id")[:1])
            if dedup_key
            else Value(None, output_field=BigIntegerField()),
            last_created=Subquery(
                ScaleOutEvent.objects.filter(config=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
            ),
        )
        .values_list("earlier", "last_created")
        .get()
    )
    if earlier is not None:
        return _record_duplicate(record, earlier)
    if not config.enabled:
        return record(Outcome.DISABLED, _("Autoscaling of “%(service)s” is disabled.") % {"service": service_name})

    now = timezone.now()
    if last_created is not None and config.cooldown_seconds:
        ends = last_created + timedelta(seconds=config.cooldown_seconds)
        if now < ends:
            return record(
                Outcome.COOLDOWN,
                _(
                    "In cooldown: the last scale-out began %(ago)d s ago and the cooldown is %(cooldown)d s "
                    "(until %(until)s)."
                )
                % {
                    "ago": (now - last_created).total_seconds(),
                    "cooldown": config.cooldown_seconds,
                    "until": ends.strftime("%Y-%m-%d %H:%M:%S %Z"),
                },
            )

    active = config.events.filter(status__in=ScaleOutEvent.ACTIVE_STATUSES).aggregate(
        creating=Sum("vm_count"), running=Min("pk")
    )
    current = config_instance_count(config=config)
    creating = active["creating"] or 0
    if current + creating >= config.max_instances:
        return record(
            Outcome.AT_MAX,
            _("At maximum: %(current)d instances running and %(creating)d being created; the maximum is %(max)d.")
            % {"current": current, "creating": creating, "max": config.max_instances},
        )
    running = active["running"]
    if running is not None:
        return record(
            Outcome.ALREADY_SCALING, _("Already scaling: event #%(event)d is still in progress.") % {"event": running}
        )

    count = min(vm_count or config.scale_out_step, config.max_instances - current)
    event_fields = {
        "config": config,
        "service_name": service_name,
        "vm_count": count,
        "jenkins_job": config.jenkins_job_name,
    }
    if alert is not None:
        event_fields.update(
            source=ScaleOutEvent.Source.ALERT,
            alert_name=fields["alert_name"],
            alert_labels=alert["labels"],
            alert_value=str(alert["annotations"].get("value", ""))[:64],
            alert_starts_at=alert["startsAt"],
            notification=fields["notification"],
        )
    else:
        event_fields.update(source=ScaleOutEvent.Source.MANUAL, requested_by=user, reason=reason)
    try:
        # The dedup_key is unique: when another process decided the same alert a moment ago, this insert fails and
        # the savepoint takes the event back with it.
        with transaction.atomic():
            event = ScaleOutEvent.objects.create(**event_fields)
            decision = record(
                Outcome.SCALE_OUT,
                _("Scale out by %(count)d VM(s): %(current)d instances running, maximum %(max)d.")
                % {"count": count, "current": current, "max": config.max_instances},
                dedup_key=dedup_key,
                event=event,
            )
    except IntegrityError:
        if not dedup_key:
            raise
        earlier = ScalingDecision.objects.filter(dedup_key=dedup_key).values_list("event_id", flat=True).first()
        return _record_duplicate(record, earlier)
    transaction.on_commit(partial(_queue_trigger, event.pk))
    return decision


def _record_duplicate(record, earlier_event_id):
    if earlier_event_id:
        why = _("Duplicate: this alert (same group, fingerprint and start) already scaled out as event #%(event)d.") % {
            "event": earlier_event_id
        }
    else:
        why = _("Duplicate: this alert (same group, fingerprint and start) was already decided.")
    return record(Outcome.DUPLICATE, why)


def _queue_trigger(event_id):
    async_task("events.tasks.event_trigger", event_id, task_name=f"event-trigger-{event_id}")


# --- triggering ----------------------------------------------------------------------------------------------
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
    started = timezone.now()
    action, _created = EventAction.objects.update_or_create(
        event=event,
        step=EventAction.Step.TRIGGER,
        defaults={"status": StepStatus.RUNNING, "started_at": started, "finished_at": None, "message": ""},
    )

    if claim == "taken_over":
        existing = _build_for_event(client, job, event.pk)
        if existing is not None:
            _mark_triggered(event, job, queue_id=None, build=existing)
            _step_finish(
                action,
                StepStatus.SUCCEEDED,
                _("Found build #%(n)d started by an earlier attempt.") % {"n": existing.number},
            )
            return Status.TRIGGERED

    token = secrets.token_urlsafe(32)
    ScaleOutEvent.objects.filter(pk=event.pk).update(callback_token_hash=_token_hash(token), jenkins_job=job)
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
                message = _("Jenkins could not be reached: %(why)s") % {"why": exc}
                if exc.permanent:
                    message = _("Jenkins refused to start job %(job)s: %(why)s") % {"job": job, "why": exc}
                _event_fail_pending(event.pk, message)
                _step_finish(action, StepStatus.FAILED, message, {"attempts": attempt + 1, "errors": errors})
                return ScaleOutEvent.objects.filter(pk=event.pk).values_list("status", flat=True).first()
            time.sleep(settings.EVENT_TRIGGER_BACKOFF * (2**attempt))

    _mark_triggered(event, job, queue_id=queue_id, build=None)
    _step_finish(
        action,
        StepStatus.SUCCEEDED,
        _("Build requested from Jenkins (queue item %(queue)s).") % {"queue": queue_id},
        {"attempts": len(errors) + 1, "errors": errors, "queue_id": queue_id},
    )
    # One look at the queue item; waiting for an executor is another task's job, so that this worker is free for
    # the next trigger at once.
    _queue_follow(client, event.pk, job, queue_id, wait=0)
    status, number = ScaleOutEvent.objects.filter(pk=event.pk).values_list("status", "build_number").first()
    if number is None and status in ScaleOutEvent.ACTIVE_STATUSES:
        async_task("events.tasks.event_build_number_follow", event.pk, task_name=f"event-follow-{event.pk}")
    return status


def event_build_number_follow(*, event_id):
    """Follow a triggered event's queue item to its build number for up to EVENT_QUEUE_WAIT seconds."""
    event = ScaleOutEvent.objects.filter(pk=event_id).only("jenkins_job", "jenkins_queue_id", "build_number").first()
    if event is None or event.build_number is not None or event.jenkins_queue_id is None:
        return
    _queue_follow(jenkins_client(), event.pk, event.jenkins_job, event.jenkins_queue_id, wait=settings.EVENT_QUEUE_WAIT)


def _mark_triggered(event, job, *, queue_id, build):
    now = timezone.now()
    fields = {"jenkins_job": job}
    if queue_id is not None:
        fields["jenkins_queue_id"] = queue_id
    if build is not None:
        fields.update(build_number=build.number, build_url=build.url or "")
    ScaleOutEvent.objects.filter(pk=event.pk).update(**fields)
    # A fast pipeline may already have reported "running": never move an event backwards.
    ScaleOutEvent.objects.filter(pk=event.pk, status=Status.PENDING).update(status=Status.TRIGGERED, triggered_at=now)
    ScaleOutEvent.objects.filter(pk=event.pk, triggered_at__isnull=True).update(triggered_at=now)


def _step_finish(action, status, message, details=None):
    action.status = status
    action.message = message
    action.finished_at = timezone.now()
    if details is not None:
        action.details = details
    action.save(update_fields=["status", "message", "finished_at", "details"])


def _event_fail_pending(event_id, message):
    ScaleOutEvent.objects.filter(pk=event_id, status=Status.PENDING).update(
        status=Status.FAILED, error=message, failed_step=EventAction.Step.TRIGGER, finished_at=timezone.now()
    )


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


def _queue_follow(client, event_id, job, queue_id, *, wait):
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
            message = _("The Jenkins queue item was cancelled: %(why)s") % {"why": item.why or "-"}
            ScaleOutEvent.objects.filter(pk=event_id, status__in=[Status.PENDING, Status.TRIGGERED]).update(
                status=Status.CANCELLED, error=message, finished_at=timezone.now()
            )
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def event_sweep():
    """Periodic: re-queue events left pending, fill in missing build numbers, fail events whose build ended
    without a final report, and queue log fetches of finished builds."""
    now = timezone.now()
    stale = ScaleOutEvent.objects.filter(status=Status.PENDING).filter(
        Q(trigger_claimed_at__isnull=True, created_at__lt=now - timedelta(seconds=settings.EVENT_PENDING_SWEEP_AFTER))
        | Q(trigger_claimed_at__lt=now - timedelta(seconds=settings.EVENT_TRIGGER_LEASE))
    )
    requeued = list(stale.values_list("pk", flat=True)[:500])
    for event_id in requeued:
        _queue_trigger(event_id)

    numbered = 0
    waiting = ScaleOutEvent.objects.filter(
        status__in=[Status.TRIGGERED, Status.RUNNING], build_number__isnull=True, jenkins_queue_id__isnull=False
    ).values_list("pk", "jenkins_job", "jenkins_queue_id")[:100]
    if waiting:
        client = jenkins_client()
        for event_id, job, queue_id in waiting:
            try:
                _queue_follow(client, event_id, job, queue_id, wait=0)
            except IntegrationError as exc:
                logger.warning("sweep: event %s build number not found: %s", event_id, exc)
                continue
            numbered += 1

    silent = _builds_ended_silently(now)

    logs = list(
        ScaleOutEvent.objects.filter(
            status__in=ScaleOutEvent.FINAL_STATUSES,
            build_number__isnull=False,
            build_log_fetched_at__isnull=True,
            finished_at__gte=now - timedelta(days=1),
        ).values_list("pk", flat=True)[:100]
    )
    for event_id in logs:
        async_task("events.tasks.event_build_log_fetch", event_id, task_name=f"event-log-{event_id}")
    return {
        "requeued": len(requeued),
        "build_numbers_checked": numbered,
        "ended_without_report": silent,
        "logs_queued": len(logs),
    }


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
            message = _("Jenkins no longer has build #%(n)d, and the pipeline never reported a final status.") % {
                "n": number
            }
        else:
            if build.building or (
                build.timestamp and build.timestamp + timedelta(milliseconds=build.duration_ms) > now - grace
            ):
                continue
            message = _("Jenkins build #%(n)d ended %(result)s without reporting the event's final status.") % {
                "n": number,
                "result": build.result or "?",
            }
        if _event_fail_active(event_id, message):
            ended += 1
    return ended


def _event_fail_active(event_id, message):
    with transaction.atomic():
        event = ScaleOutEvent.objects.select_for_update().get(pk=event_id)
        if not event.is_active:
            return False
        now = timezone.now()
        step = event.actions.filter(status=StepStatus.RUNNING).order_by("-started_at").first()
        if step is not None:
            step.status = StepStatus.FAILED
            step.finished_at = now
            step.message = message
            step.save(update_fields=["status", "finished_at", "message"])
        event.status = Status.FAILED
        event.error = message
        event.failed_step = step.step if step is not None else event.failed_step
        event.finished_at = now
        event.save(update_fields=["status", "error", "failed_step", "finished_at", "updated_at"])
        transaction.on_commit(partial(_queue_log_fetch, event.pk))
    return True


# --- pipeline callbacks --------------------------------------------------------------------------------------
def event_callback_authenticate(*, event_id, token, allow_finished=False):
    """The event a pipeline callback is for, when `token` is that event's callback token; else CallbackRefused.

    Other apps' pipeline endpoints (IP reservation) use this too. A finished event's token is refused unless
    `allow_finished` (the final-status callback, so that a retried curl is answered "no change").
    """
    if not token:
        raise CallbackRefused(_("Send the event's callback token as 'Authorization: Bearer <token>'."), status_code=401)
    event = ScaleOutEvent.objects.filter(pk=event_id).only("pk", "status", "callback_token_hash").first()
    if event is None:
        raise CallbackRefused(_("There is no event #%(event)s.") % {"event": event_id}, status_code=404)
    if not event.callback_token_hash or not hmac.compare_digest(_token_hash(token), event.callback_token_hash):
        raise CallbackRefused(
            _("This token is not the callback token of event #%(event)s.") % {"event": event_id}, status_code=403
        )
    if event.is_finished and not allow_finished:
        raise CallbackRefused(
            _("Event #%(event)s has finished (%(status)s); its callback token is no longer accepted.")
            % {"event": event_id, "status": event.status},
            status_code=403,
        )
    return event


def event_transition_check(*, current, new):
    """None when an event may go from `current` to `new`, else the reason (for a 409)."""
    if new in EVENT_TRANSITIONS.get(current, set()):
        return None
    if current in ScaleOutEvent.FINAL_STATUSES:
        return _("Event has finished as %(current)s; it cannot become %(new)s.") % {"current": current, "new": new}
    return _("Event status cannot change from %(current)s to %(new)s.") % {"current": current, "new": new}


@dataclass
class CallbackResult:
    event: ScaleOutEvent
    changed: bool
    action: EventAction | None = None


def event_status_report(
    *, event_id, status, message="", failed_step="", vm_names=None, vm_ips=None, build_number=None, build_url=""
):
    """The pipeline reports the event's status. Repeating a report changes nothing; a finished event stays as is."""
    with transaction.atomic():
        event = ScaleOutEvent.objects.select_for_update().get(pk=event_id)
        now = timezone.now()
        changed_fields = set()
        if build_number is not None and event.build_number != build_number:
            event.build_number = build_number
            changed_fields.add("build_number")
        if build_url and event.build_url != build_url:
            event.build_url = build_url
            changed_fields.add("build_url")
        for name, value in (("vm_names", vm_names), ("vm_ips", vm_ips)):
            if value is not None and getattr(event, name) != list(value):
                setattr(event, name, list(value))
                changed_fields.add(name)

        if status != event.status:
            refusal = event_transition_check(current=event.status, new=status)
            if refusal:
                raise CallbackRefused(refusal, status_code=409)
            event.status = status
            changed_fields.add("status")
            if status == Status.RUNNING or event.started_at is None:
                event.started_at = event.started_at or now
                changed_fields.add("started_at")
            if event.triggered_at is None:
                event.triggered_at = now
                changed_fields.add("triggered_at")
            if status in ScaleOutEvent.FINAL_STATUSES:
                event.finished_at = now
                changed_fields.add("finished_at")
                if status != Status.SUCCEEDED:
                    event.error = message or event.error
                    event.failed_step = (failed_step or "")[:64]
                    changed_fields.update({"error", "failed_step"})
                transaction.on_commit(partial(_queue_log_fetch, event.pk))
        elif event.is_finished and changed_fields:
            raise CallbackRefused(
                _("Event #%(event)s has finished (%(status)s); it cannot change any more.")
                % {"event": event.pk, "status": event.status},
                status_code=409,
            )
        if changed_fields:
            event.save(update_fields=[*changed_fields, "updated_at"])
        return CallbackResult(event=event, changed=bool(changed_fields))


def _queue_log_fetch(event_id):
    async_task("events.tasks.event_build_log_fetch", event_id, task_name=f"event-log-{event_id}")


def event_step_report(*, event_id, step, status, message="", details=None):
    """The pipeline reports one step starting or finishing. One row per (event, step), updated in place."""
    with transaction.atomic():
        event = ScaleOutEvent.objects.select_for_update().get(pk=event_id)
        now = timezone.now()
        action = EventAction.objects.filter(event=event, step=step).first()
        current = action.status if action else None
        if current == status:
            return CallbackResult(event=event, changed=False, action=action)
        if status not in STEP_TRANSITIONS[current]:
            raise CallbackRefused(
                _("Step %(step)s is %(current)s; it cannot become %(new)s.")
                % {"step": step, "current": current, "new": status},
                status_code=409,
            )
        if action is None:
            action = EventAction(event=event, step=step)
        action.status = status
        action.message = message or action.message
        if details:
            action.details = {**(action.details or {}), **details}
        if status == StepStatus.RUNNING:
            action.started_at = now
            action.finished_at = None
        else:
            action.started_at = action.started_at or now
            action.finished_at = now
        action.save()
        # A step report means the pipeline runs, even if its "running" status report was lost.
        if event.status in (Status.PENDING, Status.TRIGGERED):
            event.status = Status.RUNNING
            event.started_at = event.started_at or now
            event.triggered_at = event.triggered_at or now
            event.save(update_fields=["status", "started_at", "triggered_at", "updated_at"])
        return CallbackResult(event=event, changed=True, action=action)


# --- build logs ----------------------------------------------------------------------------------------------
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


# --- Jenkins build history (read-only) ----------------------------------------------------------------------
SECRET_PARAMETER_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def jenkins_build_public(build):
    """A build as a plain dict for the API, with secret parameters (the callback token) masked."""
    parameters = {
        name: ("********" if any(word in name.upper() for word in SECRET_PARAMETER_WORDS) else value)
        for name, value in (build.parameters or {}).items()
    }
    return {
        "job_name": build.job_name,
        "number": build.number,
        "result": build.result,
        "building": build.building,
        "duration_ms": build.duration_ms,
        "timestamp": build.timestamp,
        "url": build.url,
        "parameters": parameters,
        "queue_id": build.queue_id,
    }


def jenkins_builds_list(*, job_name, limit):
    return [jenkins_build_public(build) for build in jenkins_client().builds(job_name, limit)]


def jenkins_build_get(*, job_name, number):
    return jenkins_build_public(jenkins_client().build(job_name, number))


def jenkins_build_log_get(*, job_name, number):
    return jenkins_client().build_log(job_name, number)
