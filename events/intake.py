"""Alert intake: webhook authentication, storing a notification, and the scaling decision for each alert.

How a notification becomes an event: `alert_notification_receive` stores the notification and, for each alert
whose own status is firing, `_decide` runs under a row lock on the service's config (SELECT ... FOR UPDATE), so
decisions for one service are serialized across threads and processes. A scale-out creates a `ScaleOutEvent` and
claims the alert's `dedup_key` (unique) in one savepoint; a second process deciding the same alert at the same
moment hits the unique constraint and records "duplicate". On commit, the trigger task starts the Jenkins job
(events.trigger).
"""

import hashlib
import hmac
from base64 import b64decode
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, Min, OuterRef, Subquery, Sum, Value
from django.utils import timezone
from django.utils.translation import gettext as _

from autoscaling.models import AutoscalingConfig
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.trigger import event_trigger_queue
from fleet.selectors import config_fleet_counts

Outcome = ScalingDecision.Outcome


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook delivery, as the decisions read it (each alert's own status counts, not the
    notification's)."""

    status: str
    labels: dict
    annotations: dict
    fingerprint: str
    starts_at: datetime

    @classmethod
    def from_payload(cls, alert):
        """From one validated alert of an Alertmanager v4 body (startsAt already a datetime)."""
        return cls(
            status=alert["status"],
            labels=alert["labels"],
            annotations=alert.get("annotations") or {},
            fingerprint=alert["fingerprint"],
            starts_at=alert["startsAt"],
        )

    @property
    def name(self):
        return self.labels.get("alertname", "")[:200]

    @property
    def value(self):
        """The value annotation the alert rule sets (what the metric was when it fired)."""
        return str(self.annotations.get("value", ""))[:64]


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
    alerts = [Alert.from_payload(alert) for alert in payload["alerts"]]
    resolved = [alert for alert in alerts if alert.status == "resolved"]
    firing = [alert for alert in alerts if alert.status == "firing"]
    dedup_keys = [
        alert_dedup_key(
            service_name=service_name,
            group_key=payload["groupKey"],
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
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
        "alert_name": alert.name,
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
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
    # The inventory: instances in service, and being created (those the running scale-outs recorded, or the VMs
    # they will create when they have not recorded them yet).
    fleet = config_fleet_counts(config=config)
    current = fleet.in_service
    creating = max(fleet.creating, active["creating"] or 0)
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
            alert_labels=alert.labels,
            alert_value=alert.value,
            alert_starts_at=alert.starts_at,
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
    transaction.on_commit(partial(event_trigger_queue, event_id=event.pk))
    return decision


def _record_duplicate(record, earlier_event_id):
    if earlier_event_id:
        why = _("Duplicate: this alert (same group, fingerprint and start) already scaled out as event #%(event)d.") % {
            "event": earlier_event_id
        }
    else:
        why = _("Duplicate: this alert (same group, fingerprint and start) was already decided.")
    return record(Outcome.DUPLICATE, why)
