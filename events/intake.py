"""Alert intake: webhook authentication, storing a notification, and the scaling decision for each alert.

How a notification becomes an event: `alert_notification_receive` stores the notification and, for each alert
whose own status is firing, `_decide` runs under a row lock on the service's config (SELECT ... FOR UPDATE), so
decisions for one service are serialized across threads and processes. A scale-out creates a `ScaleOutEvent` and
claims the alert's `dedup_key` (unique) in one savepoint; a second process deciding the same alert at the same
moment hits the unique constraint and records "duplicate". On commit, the trigger task starts the Jenkins job
(events.trigger).

The decision itself is autoscaling.policy.decide, a pure function; `_decide` loads its inputs under the lock (the
fleet's counts from the inventory, never IP allocations; the newest and the active event) and records its outcome.
The webhook, the manual request and the periodic evaluator (events.evaluator) all go through `_decide`.

A dry-run config is decided the same way; only the action step differs: the decision is recorded marked dry-run,
with a "would" message (autoscaling.policy.would) and its claim, and creates no event and queues no trigger. Its
would-be actions are its last actions (events.action_history), as are the flap guard's recent actions.
"""

import hashlib
import hmac
from base64 import b64decode
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    DEFERRED,
    BigIntegerField,
    CharField,
    Exists,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_noop

from access import audit
from autoscaling import policy, rendering
from autoscaling import safety_services as safety
from autoscaling.models import AutoscalingConfig
from common.faults import fault_point
from common.messages import Message, stored
from common.prepared import PreparedQuery
from events import action_history
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.trigger import event_trigger_queue
from fleet.models import ManagedInstance
from fleet.selectors import chosen_for_scale_in, config_fleet_counts, in_service_instances

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

    @property
    def scales_in(self):
        """A scale-in alert (label direction="in"); any other, a rule without the label included, scales out."""
        return self.labels.get(rendering.DIRECTION_LABEL) == rendering.SCALE_IN

    @property
    def signal(self):
        return policy.Signal.idle() if self.scales_in else policy.Signal.alert()


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
        fault_point("webhook.notification_stored")
        decisions = []
        if resolved:
            decisions += ScalingDecision.objects.bulk_create(
                ScalingDecision(
                    outcome=Outcome.RESOLVED,
                    **stored(Message(gettext_noop("The alert is resolved; resolved alerts never scale.")), "reason"),
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
                    signal=alert.signal,
                    alert=alert,
                )
            )
    return notification, decisions


def scale_out_request(*, service_name, user, vm_count=None, reason=""):
    """An operator's manual scale-out; the same decisions as an alert. Returns the ScalingDecision."""
    with transaction.atomic():
        config = _config_for_decision(service_name, lock=True)
        decision = _decide(
            config=config,
            service_name=service_name,
            fields={"service_name": service_name, "config": config, "alert_name": ""},
            dedup_key=None,
            signal=policy.Signal.manual(vm_count),
            user=user,
            reason=reason,
        )
        audit.operator_action(
            name="scale_out",
            instance=decision,
            user=user,
            details={"outcome": decision.outcome, "event": decision.event_id, "vm_count": vm_count},
        )
        return decision


def instance_remove_request(*, instance_id, user, reason=""):
    """An operator removes one instance through the scale-in path: a manual scale-in event for it, decided like any
    other (never below min). Returns the ScalingDecision (with its event when it acts); an instance that is not in
    service, or is already being removed, is refused and the refusal recorded. ManagedInstance.DoesNotExist for an
    unknown id."""
    service_name = ManagedInstance.objects.values_list("config__service_name", flat=True).get(pk=instance_id)
    with transaction.atomic():
        config = _config_for_decision(service_name, lock=True)
        fields = {"service_name": service_name, "config": config, "alert_name": ""}
        instance = (
            in_service_instances(config_id=config.pk)
            .filter(pk=instance_id)
            .annotate(chosen_by=Max("removed_by_event_id", filter=chosen_for_scale_in()))
            .first()
        )
        refusal = None
        if instance is None:
            state = ManagedInstance.objects.get(pk=instance_id).get_state_display()
            refusal = Message(
                gettext_noop(
                    "Instance #%(instance)d is %(state)s, not in service: only an instance in service can be removed."
                ),
                {"instance": instance_id, "state": state},
            )
        elif instance.leaving:
            refusal = Message(
                gettext_noop("Instance #%(instance)d is already being removed by event #%(event)d."),
                {"instance": instance_id, "event": instance.chosen_by},
            )
        if refusal:
            return ScalingDecision.objects.create(
                outcome=Outcome.NO_CANDIDATE, **stored(refusal, "reason"), **fields, dry_run=config.dry_run
            )
        return _decide(
            config=config,
            service_name=service_name,
            fields=fields,
            dedup_key=None,
            signal=policy.Signal.remove(),
            user=user,
            reason=reason,
            instance=instance,
        )


# What a decision reads of a config: loading only this keeps the locked read small.
DECISION_FIELDS = (
    "id",
    "service_name",
    "enabled",
    "policy_type",
    "min_instances",
    "max_instances",
    "scale_out_step",
    "max_scale_out_step",
    "target_value",
    "cooldown_seconds",
    "scale_in_threshold",
    "scale_in_duration_seconds",
    "scale_in_cooldown_seconds",
    "scale_in_step",
    "scale_in_order",
    "template_id",
    "monitored_instances",
    "dry_run",
)


def config_policy(config):
    """The policy of a config, as the pure decision reads it."""
    return policy.Policy(
        type=config.policy_type,
        enabled=config.enabled,
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        step=config.scale_out_step,
        max_step=config.max_scale_out_step,
        cooldown_seconds=config.cooldown_seconds,
        target_value=config.target_value,
        service_name=config.service_name,
        scale_in_enabled=config.scale_in_threshold is not None,
        scale_in_step=config.scale_in_step,
        scale_in_cooldown_seconds=config.scale_in_cooldown_seconds,
        scale_in_duration_seconds=config.scale_in_duration_seconds,
    )


def active_vms_subquery():
    """The VMs the config's scale-outs in progress will create (for a config row: OuterRef("pk"))."""
    return Subquery(
        ScaleOutEvent.objects.filter(
            config=OuterRef("pk"), action=ScaleOutEvent.Action.SCALE_OUT, status__in=ScaleOutEvent.ACTIVE_STATUSES
        )
        .order_by()
        .values("config")
        .annotate(total=Sum("vm_count"))
        .values("total")[:1],
        output_field=IntegerField(),
    )


def event_annotations():
    """What a decision reads of a config's events (for a config row): when its newest scale-out and scale-in
    began, its newest event of either kind, its oldest scale-out in progress and the VMs that one will create (a
    dry-run config's would-be actions count as its scale-outs and scale-ins: events.action_history)."""
    events = ScaleOutEvent.objects.filter(config=OuterRef("pk"))
    scale_outs = events.filter(action=ScaleOutEvent.Action.SCALE_OUT)
    newest = "-created_at", "-pk"
    live = {
        "last_created": Subquery(scale_outs.order_by(*newest).values("created_at")[:1]),
        "last_scale_in": Subquery(
            events.filter(action=ScaleOutEvent.Action.SCALE_IN).order_by(*newest).values("created_at")[:1]
        ),
        # The evaluator's claim names the newest event by id: ids only grow, whatever the clocks say.
        "last_id": Subquery(events.order_by("-pk").values("pk")[:1]),
        "active": Subquery(scale_outs.filter(status__in=ScaleOutEvent.ACTIVE_STATUSES).order_by("pk").values("pk")[:1]),
        "active_vms": active_vms_subquery(),
    }
    return action_history.dry_run_annotations(live)


def decision_fleet(counts, *, active_vms, known, would_be_out_at=None):
    """The fleet as the decision counts it: in service (without the instances a scale-in in progress removes),
    and being created: the instances the inventory has in creation, or the VMs the scale-outs in progress will
    create when they have not recorded them yet. `would_be_out_at`: a dry-run config's newest would-be scale-out,
    whose VMs warm up as if in service at once (events.action_history)."""
    return policy.Fleet(
        in_service=counts.in_service - counts.leaving,
        creating=max(counts.creating, active_vms or 0),
        known=known,
        removable=counts.removable,
        newest_in_service_at=max(
            (at for at in (counts.newest_in_service_at, would_be_out_at) if at is not None), default=None
        ),
        held=counts.held + counts.leaving,
    )


def decision_reason(decision):
    """The decision's reason: its message id and parameters, rendered when shown."""
    return Message(decision.message, decision.params)


def evaluator_dedup_key(*, service_name, last_event_id, dry_run=False, last_would_id=None):
    """The evaluator's claim: "the action that follows event #N" (or the first one). Every evaluator run and
    process deciding the same service before a new event exists computes the same key, so only one of them acts.
    A dry-run config's would-be actions create no event: its claim also names its newest would-be action."""
    parts = ["evaluator", service_name, str(last_event_id or 0)]
    if dry_run:
        parts += ["dry-run", str(last_would_id or 0)]
    raw = "\x00".join(parts)
    return hashlib.sha256(raw.encode()).hexdigest()


# Not-scaled outcomes that say the same: the evaluator records "no alert firing" only after something else.
QUIET_OUTCOMES = {Outcome.NOT_FIRING, Outcome.RESOLVED, None}


def same_outcome(outcome, last_outcome):
    if outcome in QUIET_OUTCOMES:
        return last_outcome in QUIET_OUTCOMES
    return outcome == last_outcome


def _config_for_decision(service_name, *, lock, dedup_key=None):
    """The config the decision reads (DECISION_FIELDS), locked when `lock`; None for an unknown service."""
    with_claim = bool(dedup_key and connection.features.has_select_for_update)
    shape = (with_claim, lock)
    if shape not in _CONFIG_QUERIES:
        kinds = {"service_name": "text", **({"dedup_key": "text"} if with_claim else {})}
        _CONFIG_QUERIES[shape] = PreparedQuery(partial(_config_query, lock=lock), **kinds)
    row = _CONFIG_QUERIES[shape].first(service_name=service_name, **({"dedup_key": dedup_key} if with_claim else {}))
    if row is None:
        return None
    # from_db takes every concrete field's value in the model's order, DEFERRED for those not read.
    fields = AutoscalingConfig._meta.concrete_fields
    config = AutoscalingConfig.from_db(
        "default", DECISION_FIELDS, [row.get(field.attname, DEFERRED) for field in fields]
    )
    config.decided_event = row.get("decided_event")
    return config


_CONFIG_QUERIES = {}


def _config_query(*, service_name, lock, dedup_key=None):
    configs = AutoscalingConfig.objects.filter(service_name=service_name)
    names = list(DECISION_FIELDS)
    if dedup_key:
        # Read in the locking statement, so possibly before another process committed its decision of this alert:
        # a decision found here is final (the alert is a duplicate); none found is re-checked after the lock. Only
        # where rows are locked (PostgreSQL): SQLite serialises writers anyway.
        configs = configs.annotate(decided_event=Subquery(_claims(dedup_key=dedup_key)))
        names.append("decided_event")
    if lock:
        configs = configs.select_for_update(of=("self",))
    return configs.order_by("pk").values(*names)[:1]


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


def _decide(
    *,
    config,
    service_name,
    fields,
    dedup_key,
    signal,
    alert=None,
    user=None,
    reason="",
    evaluator=False,
    instance=None,
):
    """Decide one signal for a config the caller has locked: load the inputs, call autoscaling.policy.decide,
    record and return the ScalingDecision.

    `dedup_key`: the webhook's alert instance (group key, fingerprint, start), claimed by a scale-out; None for a
    manual request. `instance`: the one an operator removes (signal "remove"); otherwise a scale-in removes the
    instances `autoscaling.policy.instances_to_remove` chooses. `evaluator`: the periodic pass, whose claim is "the
    action after the newest event" and which records a not-scaled outcome only when it differs from the service's
    last recorded one (returns None then).
    """

    def record(outcome, why, **extra):
        extra.setdefault("dry_run", bool(config and config.dry_run))
        return ScalingDecision.objects.create(outcome=outcome, **stored(why, "reason"), **fields, **extra)

    if config is None:
        return record(
            Outcome.UNKNOWN_SERVICE,
            Message(gettext_noop("No autoscaling config is named “%(service)s”."), {"service": service_name}),
        )
    if getattr(config, "decided_event", None) is not None:
        return _record_duplicate(record, config.decided_event)
    # One round trip, after the lock: the event an earlier decision of this same alert created (through the
    # webhook's key, or the evaluator's decision of the same fingerprint and start), when and which the config's
    # newest event is, the oldest one in progress, and the last recorded outcome.
    by_alert = bool(dedup_key and alert is not None)
    inputs = _inputs_query(by_key=bool(dedup_key), by_alert=by_alert, evaluator=evaluator).first(
        config_id=config.pk,
        **({"dedup_key": dedup_key} if dedup_key else {}),
        **({"fingerprint": alert.fingerprint, "starts_at": alert.starts_at} if by_alert else {}),
    )
    if inputs["earlier"] is not None and not evaluator:
        return _record_duplicate(record, inputs["earlier"])
    counts = config_fleet_counts(config=config)
    now = timezone.now()
    decision = policy.decide(
        policy=config_policy(config),
        fleet=decision_fleet(
            counts, active_vms=inputs["active_vms"], known=inputs["known"], would_be_out_at=inputs["last_would_out"]
        ),
        signal=signal,
        last_action_at=inputs["last_created"],
        active_event_id=inputs["active"],
        now=now,
        last_scale_in_at=inputs["last_scale_in"],
        recent_actions=action_history.recent_actions(configs=[config], now=now)[config.pk],
        safety=safety.config_safety(config=config),
    )
    decision, removing = scale_in_choose(config=config, decision=decision, instance=instance)
    if config.dry_run:
        decision = policy.would(decision)
    why = decision_reason(decision)
    if not decision.acts:
        if evaluator and same_outcome(decision.outcome, inputs["last_outcome"]):
            return None
        return record(decision.outcome, why)

    if evaluator:
        dedup_key = evaluator_dedup_key(
            service_name=service_name,
            last_event_id=inputs["last_id"],
            dry_run=config.dry_run,
            last_would_id=inputs["last_would"],
        )
    if decision.dry_run:
        return _record_would_be(record, decision, why, dedup_key)
    event_fields = action_event_fields(
        config=config,
        decision=decision,
        why=why,
        alert=alert,
        notification=fields.get("notification"),
        user=user,
        reason=reason,
        removing=removing,
    )
    try:
        # The dedup_key is unique: when another process decided the same alert (or, for the evaluator, the same
        # service since the same event) a moment ago, this insert fails and the savepoint takes the event back.
        with transaction.atomic():
            event = ScaleOutEvent.objects.create(**event_fields)
            instances_removed_by(event, removing)
            decision_row = record(decision.outcome, why, dedup_key=dedup_key, event=event)
    except IntegrityError:
        if not dedup_key:
            raise
        earlier = ScalingDecision.objects.filter(dedup_key=dedup_key).values_list("event_id", flat=True).first()
        return _record_duplicate(record, earlier)
    transaction.on_commit(partial(event_trigger_queue, event_id=event.pk))
    return decision_row


_INPUTS_QUERIES = {}


def _inputs_query(*, by_key, by_alert, evaluator):
    """The decision's inputs of one config (`_decide`), as a query compiled once per shape (common.prepared)."""
    shape = (by_key, by_alert, evaluator)
    if shape not in _INPUTS_QUERIES:
        kinds = {"config_id": "int"}
        if by_key:
            kinds["dedup_key"] = "text"
        if by_alert:
            kinds.update(fingerprint="text", starts_at="datetime")
        _INPUTS_QUERIES[shape] = PreparedQuery(partial(_decision_inputs, evaluator=evaluator), **kinds)
    return _INPUTS_QUERIES[shape]


def _decision_inputs(*, config_id, evaluator, dedup_key=None, fingerprint=None, starts_at=None):
    none = Value(None, output_field=BigIntegerField())
    earlier_by_key = Subquery(_claims(dedup_key=dedup_key)) if dedup_key else none
    earlier_by_alert = (
        Subquery(
            _claims(
                Q(event__isnull=False) | Q(dry_run=True, outcome__in=ScalingDecision.ACTIONS),
                config=OuterRef("pk"),
                fingerprint=fingerprint,
                starts_at=starts_at,
            )
        )
        if fingerprint is not None
        else none
    )
    return (
        AutoscalingConfig.objects.filter(pk=config_id)
        .annotate(
            earlier=Coalesce(earlier_by_key, earlier_by_alert),
            **event_annotations(),
            last_outcome=Subquery(
                ScalingDecision.objects.filter(config=OuterRef("pk")).order_by("-pk").values("outcome")[:1]
            )
            if evaluator
            else Value(None, output_field=CharField()),
            known=Exists(ManagedInstance.objects.filter(config=OuterRef("pk"))),
        )
        .values(
            "earlier",
            "last_created",
            "last_scale_in",
            "last_id",
            "last_would",
            "last_would_out",
            "active",
            "active_vms",
            "last_outcome",
            "known",
        )
    )


def action_event_fields(*, config, decision, why, alert=None, notification=None, user=None, reason="", removing=()):
    """The fields of the event an action decision creates (the webhook's, a manual request's or the evaluator's);
    `removing`: the instances a scale-in removes (`scale_in_choose`)."""
    event_fields = {
        "config": config,
        "service_name": config.service_name,
        "vm_count": len(removing) or decision.count,
        "jenkins_job": config.jenkins_job_name,
        "source": decision.source,
        "action": ScaleOutEvent.Action.SCALE_IN if removing else ScaleOutEvent.Action.SCALE_OUT,
    }
    if alert is not None:
        event_fields.update(
            alert_name=alert.name,
            alert_labels=alert.labels,
            alert_value=alert.value,
            alert_starts_at=alert.starts_at,
            notification=notification,
        )
    if decision.source == ScaleOutEvent.Source.MANUAL:
        event_fields.update(requested_by=user, reason=reason)
    elif decision.source != ScaleOutEvent.Source.ALERT:
        event_fields.update(stored(why, "reason"))
    return event_fields


def scale_in_choose(*, config, decision, instance=None):
    """(decision, the ids of the instances it removes): for a scale-in, the operator's `instance` or those
    autoscaling.policy.instances_to_remove chooses (read under the config's lock); none left turns the decision
    into "no candidate". Any other decision removes nothing."""
    if decision.outcome != Outcome.SCALE_IN:
        return decision, []
    removing = [instance.pk] if instance is not None else _instances_to_remove(config, decision.count)
    if not removing:  # the counts said some may go, the rows say none
        decision = policy.Decision(
            Outcome.NO_CANDIDATE,
            policy.gettext_noop("No instance may be removed: every instance in service is protected or leaving."),
        )
    return decision, removing


def instances_removed_by(event, removing):
    """Record the chosen instances on their scale-in event, in the event's transaction: no other decision can
    choose them again."""
    if removing:
        ManagedInstance.objects.filter(pk__in=removing).update(removed_by_event=event)


def _instances_to_remove(config, count):
    """The ids of the instances a scale-in of `count` removes, chosen among the config's instances in service
    (read under the config's lock)."""
    candidates = [
        policy.Candidate(
            id=row["pk"],
            in_service_at=row["in_service_at"],
            healthy=row["health"] != ManagedInstance.Health.UNHEALTHY,
            template_id=row["template_id"],
            protected=row["protected_from_scale_in"],
            chosen=bool(row["leaving"]),
        )
        for row in in_service_instances(config_id=config.pk).values(
            "pk", "in_service_at", "health", "template_id", "protected_from_scale_in", "leaving"
        )
    ]
    return policy.instances_to_remove(
        candidates, count=count, order=config.scale_in_order, template_id=config.template_id
    )


def _claims(*conditions, **filters):
    """What an earlier decision that claimed an alert says (a subquery's values): its event, or 0 for a dry-run
    config's would-be action (a claim without an event)."""
    return (
        ScalingDecision.objects.filter(*conditions, **filters)
        .annotate(claimed=Coalesce("event_id", Value(0, output_field=BigIntegerField())))
        .values("claimed")[:1]
    )


def _record_would_be(record, decision, why, dedup_key):
    """A dry-run config's action: recorded with its claim (so a repeat, an HA duplicate or a second evaluator run
    is a duplicate, as it would be live), no event, nothing triggered."""
    try:
        with transaction.atomic():
            return record(decision.outcome, why, dedup_key=dedup_key)
    except IntegrityError:
        if not dedup_key:
            raise
        return _record_duplicate(record, None)


def _record_duplicate(record, earlier_event_id):
    if earlier_event_id:
        why = Message(
            gettext_noop(
                "Duplicate: this alert (same group, fingerprint and start) already scaled out as event #%(event)d."
            ),
            {"event": earlier_event_id},
        )
    else:
        why = Message(gettext_noop("Duplicate: this alert (same group, fingerprint and start) was already decided."))
    return record(Outcome.DUPLICATE, why)
