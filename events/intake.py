"""Alert intake: webhook authentication, storing a notification, the decider, and the scaling decision for each
alert.

How a notification becomes an event: `alert_notification_receive` stores the notification (one INSERT) and the
webhook answers 202; the decider (`notifications_decide`, a task) decides the stored notifications behind the
answers, oldest first, a round at a time. Each alert whose own status is firing is decided under a row lock on the
service's config (SELECT ... FOR UPDATE), so decisions for one service are serialized across threads and
processes; a round locks the configs of its services together, in id order, as the evaluator's batches do. A
scale-out creates a `ScaleOutEvent` and claims the alert's `dedup_key` (unique) in one savepoint; a second process
deciding the same alert at the same moment hits the unique constraint and records "duplicate". On commit, the
trigger task starts the Jenkins job (events.trigger).

The decision itself is autoscaling.policy.decide, a pure function; `_decide` loads its inputs under the lock (the
fleet's counts from the inventory, never IP allocations; the newest and the active event) and records its outcome.
The decider, the manual request and the periodic evaluator (events.evaluator) all go through `_decide`, or, for
several configs read together under their locks, through `DecisionInputs.decide` with the same inputs.

A dry-run config is decided the same way; only the action step differs: the decision is recorded marked dry-run,
with a "would" message (autoscaling.policy.would) and its claim, and creates no event and queues no trigger. Its
would-be actions are its last actions (events.action_history), as are the flap guard's recent actions.
"""

import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from base64 import b64decode
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import (
    DEFERRED,
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    Exists,
    ExpressionWrapper,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime
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
from fleet.selectors import chosen_for_scale_in, config_fleet_counts, fleet_counts, in_service_instances

logger = logging.getLogger(__name__)

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
    def from_stored(cls, payload):
        """The alerts of a stored notification's body (validated when it was received), startsAt parsed as the
        webhook's validation parses it (an aware datetime in the current time zone)."""
        zone = timezone.get_current_timezone()
        for alert in payload.get("alerts") or ():
            starts_at = parse_datetime(alert["startsAt"])
            if timezone.is_aware(starts_at):
                starts_at = starts_at.astimezone(zone)
            else:
                starts_at = timezone.make_aware(starts_at, zone)
            yield cls(
                status=alert["status"],
                labels=alert.get("labels") or {},
                annotations=alert.get("annotations") or {},
                fingerprint=alert["fingerprint"],
                starts_at=starts_at,
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
    """Store one webhook delivery and wake the decider, which decides its alerts behind the answer
    (`notifications_decide`). Returns the notification.

    `payload` is the validated v4 body, `raw_payload` the body as received (stored as is).
    """
    notification = AlertNotification(
        service_name=service_name,
        status=payload["status"],
        group_key=payload["groupKey"],
        receiver=payload.get("receiver", ""),
        payload=raw_payload,
    )
    older_waits = _notification_insert(notification)
    fault_point("webhook.notification_stored")
    if not older_waits:
        transaction.on_commit(decider_wake)
    return notification


# A notification that waits longer than this no longer counts as being decided (its decider may be lost, or its
# decision failed and waits for the sweep to retry it): a newer one then wakes a decider itself.
DECIDER_STALLED_SECONDS = 30


def _notification_insert(notification):
    """INSERT the notification and learn in the same statement whether an older one still waits, the newest such
    one received within DECIDER_STALLED_SECONDS: a decider is then queued or running for it, and it reads the
    queue again before it stops (`_nothing_waits`), so this one needs no wake. Returns that flag.

    One statement instead of an INSERT and a query: the webhook's cost is its round trips to the database. The
    columns and values come from the model's fields as Model.save() prepares them; the older one is found on the
    waiting notifications' index."""
    meta = AlertNotification._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(notification, True), connection) for field in fields]
    quote = connection.ops.quote_name
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    decided_at, received_at = quote(meta.get_field("decided_at").column), quote(meta.get_field("received_at").column)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"RETURNING {pk}, (SELECT older.{received_at} > %s FROM {table} AS older "
        f"WHERE older.{decided_at} IS NULL AND older.{pk} < {table}.{pk} ORDER BY older.{pk} DESC LIMIT 1)"
    )
    stalled = timezone.now() - timedelta(seconds=DECIDER_STALLED_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, meta.get_field("received_at").get_db_prep_value(stalled, connection)])
        notification.pk, older_waits = cursor.fetchone()
    notification._state.adding = False
    notification._state.db = connection.alias
    return bool(older_waits)


def decider_wake():
    """Queue the decider (a notification was stored and no older one waits)."""
    from django_q.tasks import async_task

    async_task(notifications_decide, task_name="intake-decide")


def decider_queue_for_waiting(*, claim=None):
    """Queue the decider when notifications wait (the sweep's and a starting task cluster's net for a decider that
    was lost with its process). `claim`: a cache key that only the first caller may take (one per cluster start).
    Returns True when it queued."""
    if not _waiting().exists():
        return False
    from django.core.cache import cache
    from django_q.tasks import async_task

    if claim and not cache.add(claim, timezone.now().isoformat(), timeout=600):
        return False
    async_task(notifications_decide, task_name="intake-decide-waiting")
    return True


DECIDER_LOCK = "vmautoscale:intake-decider"
DECIDER_LOCK_SECONDS = 60
DECIDER_BATCH = 5000
# While a round finds this many waiting, the next one starts DECIDER_PACE seconds after it began.
DECIDER_BUSY = 20
DECIDER_PACE = 1.0
# Services decided in one transaction (their configs locked together, their inputs read together).
DECIDER_SERVICES = 50


def notifications_decide(*, batch=DECIDER_BATCH):
    """Decide every stored notification still waiting, oldest first, a batch at a time; one decider at a time (a
    cache lock; one that finds it taken leaves the queue to the running one, which reads it again after letting
    go). Returns the number of notifications decided."""
    from django_q.conf import Conf

    if not settings.DECIDER_NICE or not hasattr(os, "setpriority") or connection.in_atomic_block or Conf.SYNC:
        # Where it runs in its caller's thread: inside the caller's transaction (another thread's connection would
        # not see it), or as a task run in-process (the tests' mode), whose caller keeps its priority.
        return _notifications_decide_in_language(batch)
    # Behind the webhook's answers: at a lower CPU priority than the web server (Linux: per thread, so the worker
    # that runs it keeps its own), so a burst of notifications is answered first and decided as the CPU allows.
    result = {}

    def run():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), settings.DECIDER_NICE)
            result["decided"] = _notifications_decide_in_language(batch)
        except BaseException as exc:  # re-raised in the worker's thread
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="intake-decider")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["decided"]


def _notifications_decide_in_language(batch):
    # Recorded reasons are stored in the portal's language (as the webhook's request, which Alertmanager sends
    # without Accept-Language, recorded them); readers see them in their own.
    with translation.override(settings.LANGUAGE_CODE):
        return _notifications_decide(batch)


def _notifications_decide(batch):
    from django.core.cache import cache

    decided = 0
    failed = set()
    while not _nothing_waits(exclude=failed):
        token = uuid.uuid4().hex
        if not cache.add(DECIDER_LOCK, token, timeout=DECIDER_LOCK_SECONDS):
            return decided
        try:
            while True:
                started = time.monotonic()
                waiting = list(_waiting(exclude=failed).order_by("pk").values_list("pk", "service_name")[:batch])
                if not waiting:
                    break
                by_service = {}
                for pk, service_name in waiting:
                    by_service.setdefault(service_name, []).append(pk)
                services = list(by_service.items())
                for start in range(0, len(services), DECIDER_SERVICES):
                    chunk = services[start : start + DECIDER_SERVICES]
                    try:
                        decided += _notifications_decide_services(chunk)
                    except Exception:
                        # Decide them again one service at a time: one service's failure must not stop the others
                        # (the sweep retries what fails).
                        for service_name, pks in chunk:
                            try:
                                decided += _notifications_decide_services([(service_name, pks)])
                            except Exception:
                                logger.exception(
                                    "intake: the notifications %s of %s were not decided", pks, service_name
                                )
                                failed.update(pks)
                    cache.touch(DECIDER_LOCK, DECIDER_LOCK_SECONDS)
                if len(waiting) >= DECIDER_BUSY:
                    # A burst: let the next round gather more (a round costs about the same for 10 notifications
                    # as for 1,000), one round at most every DECIDER_PACE seconds.
                    time.sleep(max(0.0, DECIDER_PACE - (time.monotonic() - started)))
        finally:
            if cache.get(DECIDER_LOCK) == token:
                cache.delete(DECIDER_LOCK)
    return decided


def _nothing_waits(*, exclude=()):
    """True when no notification waits, read after every insert under way has committed: on PostgreSQL under a
    SHARE lock on the table (it waits for the inserting transactions, and a later insert, which waits for it, sees
    the decisions made so far and wakes a decider itself when none waits before it); SQLite serializes writers
    anyway. A decider stops only after this check, so a notification whose insert saw an older one waiting is
    always read by that one's decider."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {connection.ops.quote_name(AlertNotification._meta.db_table)} IN SHARE MODE"
                )
        return not _waiting(exclude=exclude).exists()


def _waiting(*, exclude=()):
    waiting = AlertNotification.objects.filter(decided_at__isnull=True)
    return waiting.exclude(pk__in=exclude) if exclude else waiting


def _notifications_decide_services(services):
    """Decide the waiting notifications of these services [(service name, pks)] in one transaction, under their
    configs' row locks (taken in id order, as the evaluator's batches take them), in arrival order, as the webhook
    decided each one before: the same decision, whose inputs do not change under the locks but by an action taken
    here. So the inputs of every config are read once, together (as the evaluator's batch reads them); an alert
    claimed earlier (here or before) is a duplicate without reading anything more; an alert with the same signal as
    one decided since the service's last action here, which did not act, gets the same decision; and `_decide`
    itself (reading again under the lock) runs only for an action, and for the decisions after one."""
    names = [service_name for service_name, _pks in services]
    with transaction.atomic():
        locked = AutoscalingConfig.objects.filter(service_name__in=names).order_by("pk")
        if connection.features.has_select_for_update:
            locked = locked.select_for_update(of=("self",))
        ids = list(locked.values_list("pk", flat=True))
        notifications = list(
            AlertNotification.objects.select_for_update()
            .filter(pk__in=[pk for _name, pks in services for pk in pks], decided_at__isnull=True)
            .order_by("pk")
            .only("pk", "service_name", "group_key", "payload")
        )
        if not notifications:
            return 0
        configs = {
            config.service_name: config for config in configs_with_inputs(AutoscalingConfig.objects.filter(pk__in=ids))
        }
        inputs = DecisionInputs.read(list(configs.values()))
        by_service = {}
        for notification in notifications:
            by_service.setdefault(notification.service_name, []).append(notification)
        copies = []
        batches = [
            _ServiceBatch(config=configs.get(service_name), service_name=service_name, copies=copies, first_look=inputs)
            for service_name in by_service
        ]
        _claims_load(batches, by_service)
        for batch in batches:
            batch.decide(by_service[batch.service_name])
        _ServiceBatch.flush_copies(copies)
        config_of = Case(
            *(When(service_name=name, then=Value(config.pk)) for name, config in configs.items()),
            default=Value(None),
            output_field=BigIntegerField(),
        )
        AlertNotification.objects.filter(pk__in=[n.pk for n in notifications]).update(
            decided_at=timezone.now(), config_id=config_of
        )
    return len(notifications)


def configs_with_inputs(configs, *, last_outcome=False):
    """`configs` (a queryset) with what a decision reads (DECISION_FIELDS and its events' and fleet's figures),
    in one query; `last_outcome`: the outcome of each one's newest decision too (the evaluator's)."""
    return list(
        configs.only(*DECISION_FIELDS, "metric", "promql_expression", "threshold", "duration_seconds")
        .annotate(
            **event_annotations(),
            last_outcome=Subquery(
                ScalingDecision.objects.filter(config=OuterRef("pk")).order_by("-pk").values("outcome")[:1],
                output_field=CharField(),
            )
            if last_outcome
            else Value(None, output_field=CharField()),
            known=Exists(ManagedInstance.objects.filter(config=OuterRef("pk"))),
        )
        .order_by("pk")
    )


@dataclass
class DecisionInputs:
    """What the decisions of several configs read besides the configs' own rows (`configs_with_inputs`): their
    fleets' counts, safety nets and recent actions, read together (for the evaluator's pass and batches, and a
    decider's transaction, under the configs' locks)."""

    now: datetime
    counts: dict
    safety: dict
    recent: dict

    @classmethod
    def read(cls, configs, *, now=None):
        ids = [config.pk for config in configs]
        now = now or timezone.now()
        return cls(
            now=now,
            counts=fleet_counts(config_ids=ids),
            safety=safety.configs_safety(config_ids=ids),
            recent=action_history.recent_actions(configs=list(configs), now=now),
        )

    def fleet(self, config):
        return decision_fleet(
            self.counts[config.pk],
            active_vms=config.active_vms,
            known=config.known,
            would_be_out_at=config.last_would_out,
        )

    def decide(self, config, signal, *, fleet=None):
        """autoscaling.policy.decide for this config (from `configs_with_inputs`) and signal, as `_decide` calls it."""
        return policy.decide(
            policy=config_policy(config),
            fleet=fleet or self.fleet(config),
            signal=signal,
            last_action_at=config.last_created,
            active_event_id=config.active,
            now=self.now,
            last_scale_in_at=config.last_scale_in,
            recent_actions=self.recent[config.pk],
            safety=self.safety[config.pk],
        )


def _claims_load(batches, by_service):
    """The claims of the batches' alerts made before them, in one query: by key and, for a config, by alert."""
    firing = {}
    for batch in batches:
        for notification in by_service[batch.service_name]:
            batch.parse(notification)
        for alert, dedup_key in batch.firing():
            firing[dedup_key] = (batch, alert)
    if not firing:
        return
    query = Q(dedup_key__in=list(firing))
    with_config = [batch.config.pk for batch in batches if batch.config is not None]
    by_alert = Value(False)
    if with_config:
        by_alert = Q(
            Q(event__isnull=False) | Q(dry_run=True, outcome__in=ScalingDecision.ACTIONS),
            config_id__in=with_config,
            fingerprint__in={alert.fingerprint for _batch, alert in firing.values()},
            starts_at__in={alert.starts_at for _batch, alert in firing.values()},
        )
        query |= by_alert
    rows = ScalingDecision.objects.filter(query).annotate(
        claimed=Coalesce("event_id", Value(0, output_field=BigIntegerField())),
        is_by_alert=ExpressionWrapper(by_alert, output_field=BooleanField()),
    )
    by_config = {batch.config.pk: batch for batch in batches if batch.config is not None}
    for dedup_key, config_id, fingerprint, starts_at, event, is_by_alert in rows.values_list(
        "dedup_key", "config_id", "fingerprint", "starts_at", "claimed", "is_by_alert"
    ):
        if dedup_key in firing:
            firing[dedup_key][0].claimed_by_key[dedup_key] = event
        if is_by_alert and config_id in by_config:
            # The newest first (the model's order), as _claims takes it.
            by_config[config_id].claimed_by_alert.setdefault((fingerprint, starts_at), event)


RESOLVED_WHY = Message(gettext_noop("The alert is resolved; resolved alerts never scale."))


class _ServiceBatch:
    """The decisions of one service's waiting notifications (`_notifications_decide_services`)."""

    def __init__(self, *, config, service_name, copies, first_look=None):
        self.config = config
        self.service_name = service_name
        self.first_look = first_look  # the inputs read with the lock, valid until this batch acts
        self.actions = 0  # claims made so far in this batch: an action changes every later decision's inputs
        self.seen = {}  # dedup key -> (actions then, the decision row)
        self.by_signal = {}  # signal -> (actions then, a decision that did not act)
        self.claimed_by_key = {}  # dedup key -> the claim's event id (0: a dry-run claim), made before the batch
        self.claimed_by_alert = {}  # (fingerprint, start) -> the same, as _decision_inputs reads them
        self.copies = copies  # decisions not written yet (shared by the transaction's batches, in order)
        self.alerts = {}  # notification pk -> [(alert, dedup key or None)]

    def parse(self, notification):
        found = []
        for alert in Alert.from_stored(notification.payload):
            dedup_key = None
            if alert.status == "firing":
                dedup_key = alert_dedup_key(
                    service_name=self.service_name,
                    group_key=notification.group_key,
                    fingerprint=alert.fingerprint,
                    starts_at=alert.starts_at,
                )
            found.append((alert, dedup_key))
        self.alerts[notification.pk] = found

    def firing(self):
        return [(alert, key) for found in self.alerts.values() for alert, key in found if key]

    def decide(self, notifications):
        config, service_name = self.config, self.service_name
        for notification in notifications:
            if notification.pk not in self.alerts:
                self.parse(notification)
            for alert, dedup_key in self.alerts[notification.pk]:
                fields = _alert_fields(notification, service_name, config, alert)
                if alert.status == "resolved":
                    self.copies.append(
                        ScalingDecision(outcome=Outcome.RESOLVED, **stored(RESOLVED_WHY, "reason"), **fields)
                    )
                    continue
                if dedup_key is None:
                    continue
                self._decide_alert(alert, dedup_key, fields)

    def _decide_alert(self, alert, dedup_key, fields):
        earlier = self.seen.get(dedup_key)
        if earlier is not None and self._repeat(earlier, fields):
            return
        claimed = self._claimed(dedup_key, alert)
        if claimed is not None:
            self.seen[dedup_key] = (
                self.actions,
                self._copy(_duplicate_why(claimed), fields, outcome=Outcome.DUPLICATE),
            )
            return
        same = self.by_signal.get(alert.signal)
        if same is not None and same[0] == self.actions:
            self.seen[dedup_key] = (self.actions, self._copy(same[1], fields))
            return
        if self.first_look is not None and self.config is not None and not self.actions:
            decision = self.first_look.decide(self.config, alert.signal)
            if self.config.dry_run:
                decision = policy.would(decision)
            if not decision.acts:
                row = self._copy(decision_reason(decision), fields, outcome=decision.outcome)
                self.by_signal[alert.signal] = (self.actions, row)
                self.seen[dedup_key] = (self.actions, row)
                return
        self.flush_copies(self.copies)
        row = _decide(
            config=self.config,
            service_name=self.service_name,
            fields=fields,
            dedup_key=dedup_key,
            signal=alert.signal,
            alert=alert,
        )
        if row.dedup_key:
            self.actions += 1
            self.claimed_by_key[dedup_key] = row.event_id or 0
            self.claimed_by_alert.setdefault((alert.fingerprint, alert.starts_at), row.event_id or 0)
        elif row.outcome != Outcome.DUPLICATE:
            self.by_signal[alert.signal] = (self.actions, row)
        self.seen[dedup_key] = (self.actions, row)

    def _claimed(self, dedup_key, alert):
        """An earlier claim of this alert (its event id, 0 for a dry-run one), or None: as _decision_inputs."""
        claimed = self.claimed_by_key.get(dedup_key)
        if claimed is None and self.config is not None:
            claimed = self.claimed_by_alert.get((alert.fingerprint, alert.starts_at))
        return claimed

    def _copy(self, why, fields, *, outcome=None):
        """Record `why` (a decision row or a Message, with `outcome`) for this alert; returns the unsaved copy."""
        dry_run = bool(self.config and self.config.dry_run)
        if isinstance(why, ScalingDecision):
            copy = ScalingDecision(
                outcome=why.outcome,
                reason=why.reason,
                reason_msgid=why.reason_msgid,
                reason_params=why.reason_params,
                dry_run=dry_run,
                **fields,
            )
        else:
            copy = ScalingDecision(outcome=outcome, **stored(why, "reason"), dry_run=dry_run, **fields)
        self.copies.append(copy)
        return copy

    def _repeat(self, earlier, fields):
        """Record a repeat of an alert decided earlier in the batch; False when it must be decided again."""
        actions_then, row = earlier
        if row.dedup_key or row.outcome == Outcome.DUPLICATE:
            # The alert claimed (acted) or was a duplicate: a repeat is a duplicate of the same event.
            why = _duplicate_why(row.event_id) if row.dedup_key else row
        elif actions_then == self.actions:
            why = row
        else:
            return False
        self._copy(why, fields, outcome=Outcome.DUPLICATE)
        return True

    @staticmethod
    def flush_copies(copies):
        if copies:
            ScalingDecision.objects.bulk_create(copies)
            copies.clear()


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


def _config_for_decision(service_name, *, lock):
    """The config the decision reads (DECISION_FIELDS), locked when `lock`; None for an unknown service."""
    if lock not in _CONFIG_QUERIES:
        _CONFIG_QUERIES[lock] = PreparedQuery(partial(_config_query, lock=lock), service_name="text")
    row = _CONFIG_QUERIES[lock].first(service_name=service_name)
    if row is None:
        return None
    # from_db takes every concrete field's value in the model's order, DEFERRED for those not read.
    fields = AutoscalingConfig._meta.concrete_fields
    return AutoscalingConfig.from_db("default", DECISION_FIELDS, [row.get(field.attname, DEFERRED) for field in fields])


_CONFIG_QUERIES = {}


def _config_query(*, service_name, lock):
    configs = AutoscalingConfig.objects.filter(service_name=service_name)
    if lock:
        configs = configs.select_for_update(of=("self",))
    return configs.order_by("pk").values(*DECISION_FIELDS)[:1]


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
    return record(Outcome.DUPLICATE, _duplicate_why(earlier_event_id))


def _duplicate_why(earlier_event_id):
    if earlier_event_id:
        return Message(
            gettext_noop(
                "Duplicate: this alert (same group, fingerprint and start) already scaled out as event #%(event)d."
            ),
            {"event": earlier_event_id},
        )
    return Message(gettext_noop("Duplicate: this alert (same group, fingerprint and start) was already decided."))
