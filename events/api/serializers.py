import json
import re

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from common.errors import ErrorSerializer
from common.serializers import ChoiceLabelField, choice_label, iso_datetime
from events import callbacks
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision

ALERT_STATUS_CHOICES = [("firing", "firing"), ("resolved", "resolved")]


def _label_value():
    return serializers.CharField(allow_blank=True, max_length=10000)


# --- Alertmanager webhook (version 4) ------------------------------------------------------------------------
class AlertmanagerAlertSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ALERT_STATUS_CHOICES)
    labels = serializers.DictField(child=_label_value(), allow_empty=True)
    annotations = serializers.DictField(child=_label_value(), required=False, default=dict)
    startsAt = serializers.DateTimeField()
    endsAt = serializers.DateTimeField()
    generatorURL = serializers.CharField(allow_blank=True, required=False, default="", max_length=10000)
    fingerprint = serializers.RegexField(
        r"^[0-9a-f]{1,64}$", error_messages={"invalid": _("Expected a hexadecimal alert fingerprint.")}
    )


class AlertmanagerWebhookSerializer(serializers.Serializer):
    version = serializers.ChoiceField(
        choices=["4"], error_messages={"invalid_choice": _("Only version 4 of the Alertmanager webhook is accepted.")}
    )
    receiver = serializers.CharField(allow_blank=True, max_length=200)
    status = serializers.ChoiceField(choices=ALERT_STATUS_CHOICES)
    alerts = serializers.ListField(child=AlertmanagerAlertSerializer(), min_length=1, max_length=1000)
    groupLabels = serializers.DictField(child=_label_value())
    commonLabels = serializers.DictField(child=_label_value())
    commonAnnotations = serializers.DictField(child=_label_value())
    externalURL = serializers.CharField(allow_blank=True, max_length=10000)
    groupKey = serializers.CharField(max_length=10000)
    truncatedAlerts = serializers.IntegerField(min_value=0, required=False, default=0)


_FINGERPRINT = re.compile(r"[0-9a-f]{1,64}")
_STATUSES = frozenset(value for value, _label in ALERT_STATUS_CHOICES)


def _status(value):
    return isinstance(value, str) and value in _STATUSES


def _texts(value, max_length=10000):
    return isinstance(value, dict) and all(isinstance(v, str) and len(v) <= max_length for v in value.values())


def _text(value, max_length=10000):
    return isinstance(value, str) and len(value) <= max_length


def _instant(value):
    if not isinstance(value, str):
        return False
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        return False
    try:  # as DRF's DateTimeField enforces the timezone (Alertmanager's endsAt is year 1 while firing)
        parsed.astimezone(timezone.get_current_timezone())
    except OverflowError:
        return False
    return True


def webhook_payload_accepted(raw):
    """What the webhook reads of a body that AlertmanagerWebhookSerializer certainly accepts ({status, groupKey,
    receiver}, as the serializer returns them), checked without building its fields; None when in doubt: the
    serializer then validates the body and says what is wrong. The webhook is the portal's hottest path, and this
    costs a tenth of the serializer. Stricter than the serializer, never looser (only the JSON types Alertmanager
    sends): events/tests/test_webhook_fast_path.py holds it to the serializer."""
    alerts = raw.get("alerts")
    group_key = raw.get("groupKey")
    receiver = raw.get("receiver")
    truncated = raw.get("truncatedAlerts", 0)
    if not (
        raw.get("version") == "4"
        and _status(raw.get("status"))
        and _text(receiver, 200)
        and isinstance(group_key, str)
        and len(group_key) <= 10000
        and group_key.strip()
        and _text(raw.get("externalURL"))
        and _texts(raw.get("groupLabels"))
        and _texts(raw.get("commonLabels"))
        and _texts(raw.get("commonAnnotations"))
        and type(truncated) is int
        and truncated >= 0
        and isinstance(alerts, list)
        and 1 <= len(alerts) <= 1000
    ):
        return None
    for alert in alerts:
        if not (
            isinstance(alert, dict)
            and _status(alert.get("status"))
            and _texts(alert.get("labels"))
            and ("annotations" not in alert or _texts(alert["annotations"]))
            and ("generatorURL" not in alert or _text(alert["generatorURL"]))
            and isinstance(alert.get("fingerprint"), str)
            and _FINGERPRINT.fullmatch(alert["fingerprint"])
            and _instant(alert.get("startsAt"))
            and _instant(alert.get("endsAt"))
        ):
            return None
    return {"status": raw["status"], "groupKey": group_key.strip(), "receiver": receiver.strip()}


# Fields Alertmanager does not send (a proxy's, a hand-made body's) are stored with the notification only while
# they stay this small together: an unknown field must not turn the notifications table into a file store.
WEBHOOK_UNKNOWN_FIELDS_MAX_BYTES = 4096
WEBHOOK_FIELDS = frozenset(AlertmanagerWebhookSerializer().fields)
WEBHOOK_ALERT_FIELDS = frozenset(AlertmanagerAlertSerializer().fields)


def webhook_payload_to_store(raw):
    """The body as received, or, when its unknown fields (top level and per alert) exceed
    WEBHOOK_UNKNOWN_FIELDS_MAX_BYTES together, the body without them and a note of their names and size."""
    unknown = {key: value for key, value in raw.items() if key not in WEBHOOK_FIELDS}
    alerts = raw.get("alerts") if isinstance(raw.get("alerts"), list) else []
    for index, alert in enumerate(alerts):
        if isinstance(alert, dict) and not alert.keys() <= WEBHOOK_ALERT_FIELDS:
            unknown[f"alerts.{index}"] = {key: value for key, value in alert.items() if key not in WEBHOOK_ALERT_FIELDS}
    if not unknown:
        return raw
    size = len(json.dumps(unknown, ensure_ascii=False, separators=(",", ":")).encode())
    if size <= WEBHOOK_UNKNOWN_FIELDS_MAX_BYTES:
        return raw
    stored = {key: value for key, value in raw.items() if key in WEBHOOK_FIELDS}
    stored["alerts"] = [
        {key: value for key, value in alert.items() if key in WEBHOOK_ALERT_FIELDS}
        if isinstance(alert, dict)
        else alert
        for alert in alerts
    ]
    names = sorted(
        {f"{path}.{key}" for path, fields in unknown.items() if path.startswith("alerts.") for key in fields}
    )
    names = sorted(key for key in unknown if not key.startswith("alerts.")) + names
    stored["portal_dropped_fields"] = {"names": names[:50], "bytes": size}
    return stored


class WebhookResponseSerializer(serializers.Serializer):
    notification = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[("accepted", "accepted")])
    url = serializers.CharField(help_text=_("The notification's page: its decisions, once decided."))


# --- events --------------------------------------------------------------------------------------------------
class EventActionSerializer(serializers.ModelSerializer):
    step_display = ChoiceLabelField(EventAction.Step, source="step")
    status_display = ChoiceLabelField(EventAction.Status, source="status")
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    message = serializers.CharField(source="message_text", read_only=True)

    class Meta:
        model = EventAction
        fields = [
            "id",
            "step",
            "step_display",
            "status",
            "status_display",
            "message",
            "details",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]


class ScaleOutEventSerializer(serializers.ModelSerializer):
    status_display = ChoiceLabelField(ScaleOutEvent.Status, source="status")
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, allow_null=True, default=None)
    # Text, not a URI in the schema: it is empty until Jenkins starts the build.
    build_url = serializers.CharField(read_only=True, help_text=_("The Jenkins build's URL; empty until it starts."))
    duration_seconds = serializers.SerializerMethodField()
    reason = serializers.CharField(source="reason_text", read_only=True, label=_("Operator's reason"))
    error = serializers.CharField(source="error_text", read_only=True, label=_("Error"))

    class Meta:
        model = ScaleOutEvent
        fields = [
            "id",
            "service_name",
            "config",
            "action",
            "status",
            "status_display",
            "source",
            "requested_by",
            "reason",
            "vm_count",
            "alert_name",
            "alert_starts_at",
            "jenkins_job",
            "build_number",
            "build_url",
            "vm_names",
            "vm_ips",
            "error",
            "failed_step",
            "created_at",
            "triggered_at",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]
        read_only_fields = fields

    def get_duration_seconds(self, event) -> float | None:
        if event.finished_at:
            return (event.finished_at - event.created_at).total_seconds()
        return None

    def to_representation(self, event):
        """What the declared fields give (ModelSerializer.to_representation: the test compares the two, field by
        field), read straight from the row. DRF's path costs a get_attribute and a to_representation call per field:
        1,200 of them and most of the request's CPU for a page of 50 events."""
        zone = timezone.get_current_timezone()
        requested_by = event.requested_by
        finished_at = event.finished_at
        return {
            "id": event.id,
            "service_name": event.service_name,
            "config": event.config_id,
            "action": event.action,
            "status": event.status,
            "status_display": choice_label(ScaleOutEvent.Status, event.status),
            "source": event.source,
            "requested_by": None if requested_by is None else str(requested_by.username),
            "reason": str(event.reason_text),
            "vm_count": event.vm_count,
            "alert_name": event.alert_name,
            "alert_starts_at": iso_datetime(event.alert_starts_at, zone),
            "jenkins_job": event.jenkins_job,
            "build_number": event.build_number,
            "build_url": event.build_url,
            "vm_names": event.vm_names,
            "vm_ips": event.vm_ips,
            "error": str(event.error_text),
            "failed_step": event.failed_step,
            "created_at": iso_datetime(event.created_at, zone),
            "triggered_at": iso_datetime(event.triggered_at, zone),
            "started_at": iso_datetime(event.started_at, zone),
            "finished_at": iso_datetime(finished_at, zone),
            "duration_seconds": (finished_at - event.created_at).total_seconds() if finished_at else None,
        }


class JenkinsInfoSerializer(serializers.Serializer):
    job = serializers.CharField()
    queue_id = serializers.IntegerField(allow_null=True)
    build_number = serializers.IntegerField(allow_null=True)
    build_url = serializers.CharField(allow_blank=True)
    log_api = serializers.CharField(allow_null=True)
    trigger_attempts = serializers.IntegerField()


class ScaleOutEventDetailSerializer(ScaleOutEventSerializer):
    actions = EventActionSerializer(many=True, read_only=True)
    jenkins = serializers.SerializerMethodField()
    is_active = serializers.BooleanField(read_only=True)

    class Meta(ScaleOutEventSerializer.Meta):
        fields = [
            *ScaleOutEventSerializer.Meta.fields,
            "is_active",
            "alert_labels",
            "alert_value",
            "notification",
            "trigger_attempts",
            "jenkins_queue_id",
            "jenkins",
            "actions",
            "build_log",
            "build_log_truncated",
        ]
        read_only_fields = fields

    # One event: the declared fields' own path (the list's shortcut covers the list's fields only).
    to_representation = serializers.ModelSerializer.to_representation

    def get_jenkins(self, event) -> JenkinsInfoSerializer:
        log_api = None
        if event.jenkins_job and event.build_number:
            log_api = f"/api/jenkins/jobs/{event.jenkins_job}/builds/{event.build_number}/log"
        return {
            "job": event.jenkins_job,
            "queue_id": event.jenkins_queue_id,
            "build_number": event.build_number,
            "build_url": event.build_url,
            "log_api": log_api,
            "trigger_attempts": event.trigger_attempts,
        }


class ManualScaleOutSerializer(serializers.Serializer):
    service_name = serializers.CharField(max_length=48)
    vm_count = serializers.IntegerField(min_value=1, max_value=10, required=False)
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class InstanceRemoveSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class DecisionRefusedSerializer(ErrorSerializer):
    outcome = serializers.CharField()
    decision = serializers.IntegerField()


# --- notifications and decisions -----------------------------------------------------------------------------
class ScalingDecisionSerializer(serializers.ModelSerializer):
    outcome_display = ChoiceLabelField(ScalingDecision.Outcome, source="outcome")
    reason = serializers.CharField(source="reason_text", read_only=True)

    class Meta:
        model = ScalingDecision
        fields = [
            "id",
            "notification",
            "service_name",
            "config",
            "outcome",
            "outcome_display",
            "reason",
            "alert_name",
            "fingerprint",
            "starts_at",
            "event",
            "decided_at",
            "dry_run",
        ]
        read_only_fields = fields


class AlertNotificationSerializer(serializers.ModelSerializer):
    decisions = ScalingDecisionSerializer(many=True, read_only=True)

    class Meta:
        model = AlertNotification
        fields = [
            "id",
            "service_name",
            "config",
            "status",
            "group_key",
            "receiver",
            "received_at",
            "decided_at",
            "decisions",
        ]
        read_only_fields = fields


class AlertNotificationDetailSerializer(AlertNotificationSerializer):
    class Meta(AlertNotificationSerializer.Meta):
        fields = [*AlertNotificationSerializer.Meta.fields, "payload"]
        read_only_fields = fields


# --- pipeline callbacks --------------------------------------------------------------------------------------
class StatusCallbackSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=callbacks.CALLBACK_EVENT_STATUSES)
    message = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    message_msgid = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text=_("The message's id in the portal's catalog (pipeline/), shown translated; `message` is its text."),
    )
    message_params = serializers.DictField(
        required=False, default=dict, help_text=_("The parameters of message_msgid.")
    )
    failed_step = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    vm_names = serializers.ListField(child=serializers.CharField(max_length=80), required=False, max_length=50)
    vm_ips = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"), required=False, max_length=50)
    build_number = serializers.IntegerField(required=False, min_value=1)
    build_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)


class StepCallbackSerializer(serializers.Serializer):
    step = serializers.ChoiceField(choices=callbacks.CALLBACK_STEPS)
    status = serializers.ChoiceField(choices=EventAction.Status.choices)
    message = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    message_msgid = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text=_("The message's id in the portal's catalog (pipeline/), shown translated; `message` is its text."),
    )
    message_params = serializers.DictField(
        required=False, default=dict, help_text=_("The parameters of message_msgid.")
    )
    details = serializers.DictField(required=False, default=dict)


class CallbackResponseSerializer(serializers.Serializer):
    event = serializers.IntegerField()
    status = serializers.CharField()
    changed = serializers.BooleanField()
    step = serializers.CharField(required=False)
    step_status = serializers.CharField(required=False)


# --- Jenkins build history -----------------------------------------------------------------------------------
class JenkinsBuildSerializer(serializers.Serializer):
    job_name = serializers.CharField()
    number = serializers.IntegerField()
    result = serializers.CharField(allow_null=True)
    building = serializers.BooleanField()
    duration_ms = serializers.IntegerField()
    timestamp = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField(allow_blank=True)
    parameters = serializers.DictField(help_text=_("Secret parameters (the callback token) are masked."))
    queue_id = serializers.IntegerField(allow_null=True)
