"""The evaluator: the periodic, level-triggered pass that re-decides every enabled service while its signal holds.

Webhooks make the portal fast; the evaluator makes it right. Every pass (default every 15 s, EVALUATOR_INTERVAL):
1. reads every enabled config with its newest event, its event in progress and its last recorded outcome (one
   query), and the fleet's counts (one query);
2. reads the firing autoscale alerts from Alertmanager's API (one request: active, not silenced, not inhibited;
   scale-out and scale-in alerts told apart by their `direction` label), and for target-tracking services the
   current average of each service's metric and its highest average over the scale-in duration from Prometheus
   (one query for all of them, each service's expression built as provisioning renders it);
3. decides each service with autoscaling.policy.decide (unlocked, as a filter): a service whose decision is not an
   action and is the same as its last recorded outcome is left alone, so a steady pass costs a fixed number of
   queries however many services there are. Any other service is decided again through the webhook's own path
   (events.intake._decide) under its row lock, and recorded.

A dry-run config is decided in the same pass; its would-be action is recorded with its claim (the action after
its newest would-be one) and creates no event (events.action_history).

So a still-firing alert scales again once its cooldown ends, an alert whose notification never arrived (the portal
was down) is acted on, and a service below its minimum is brought back to it (source "replace").

At most one action per service per cooldown window: the cooldown is checked under the row lock, and every
evaluator action claims the unique key "the action after event #N" (events.intake.evaluator_dedup_key), which two
runs or processes deciding the same service at once compute alike: the second records a duplicate. The webhook's
own key (group, fingerprint, start) still catches HA duplicates and repeats; a late notification of an alert the
evaluator already acted on is recorded as a duplicate of that event (same fingerprint and start).

How it runs every 15 s on django-q, whose schedules run at most once a minute (and are checked every 30 s): a
schedule every minute starts `evaluator_run`, which evaluates on every EVALUATOR_INTERVAL tick of the wall clock
for up to RUN_SECONDS. A run that starts takes the ownership in the EvaluatorState row; the run before it stops at
its next tick, so one worker evaluates at a time and there is no gap between runs. Every tick is claimed with a
conditional UPDATE, so it runs once however many runs are alive. No state is kept in memory: after a restart, the
next scheduled run carries on from the database.

A run holds a worker, and a stopping cluster waits for its workers' tasks: the run waits for its next tick in slices
of STOP_CHECK_SECONDS and ends at the first slice where `should_stop` (events.tasks: the cluster is stopping) is
true, so stopping the cluster never waits for the rest of a run.
"""

import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from autoscaling import policy, rendering
from autoscaling.models import AutoscalingConfig
from autoscaling.provisioning import inputs as provisioning
from common.clients import alertmanager_client, prometheus_client
from common.messages import stored
from events import intake, trigger
from events.models import EvaluatorState, ScaleOutEvent, ScalingDecision
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)

# How long one scheduled run evaluates at most: the next run (a minute later, up to 30 s late, plus its wait in
# the queue) takes over before this ends. Below the cluster's task timeout (300 s).
RUN_SECONDS = 120
# How often a run waiting for its next tick looks whether it should stop (the cluster is stopping).
STOP_CHECK_SECONDS = 0.5
AUTOSCALE_MATCHERS = {"autoscale": "true"}
DECIDE_BATCH = 50
TARGET_TRACKING = AutoscalingConfig.PolicyType.TARGET_TRACKING
PEAK_LABEL = "vmautoscale_window"


@dataclass
class PassResult:
    services: int = 0
    firing: int = 0
    decided: int = 0  # services decided again under their lock
    decisions: list = field(default_factory=list)  # the ScalingDecisions recorded
    problems: list = field(default_factory=list)  # Alertmanager or Prometheus could not be read
    seconds: float = 0.0

    @property
    def actions(self):
        return [d for d in self.decisions if d.event_id is not None]

    def summary(self):
        text = (
            f"{self.services} services, {self.firing} firing alerts, {self.decided} decided, "
            f"{len(self.decisions)} recorded, {len(self.actions)} actions"
        )
        if self.problems:
            text += "; " + "; ".join(self.problems)
        return text[:300]


def _configs(ids=None):
    """The enabled configs with the decision's inputs (one query); `ids`: these configs, enabled or not."""
    configs = (
        AutoscalingConfig.objects.filter(enabled=True) if ids is None else AutoscalingConfig.objects.filter(pk__in=ids)
    )
    return intake.configs_with_inputs(configs, last_outcome=True)


def _firing_alerts(problems):
    """service -> its firing autoscale alerts, oldest first; None when Alertmanager could not be read."""
    try:
        with alertmanager_client() as alertmanager:
            alerts = alertmanager.alerts(
                AUTOSCALE_MATCHERS, active=True, silenced=False, inhibited=False, unprocessed=False
            )
    except IntegrationError as exc:
        problems.append(f"Alertmanager: {exc}")
        return None
    by_service = {}
    for alert in alerts:
        service = alert.labels.get("service")
        if service and alert.starts_at is not None:
            by_service.setdefault(service, []).append(
                intake.Alert(
                    status="firing",
                    labels=dict(alert.labels),
                    annotations=dict(alert.annotations),
                    fingerprint=alert.fingerprint,
                    starts_at=alert.starts_at,
                )
            )
    for alerts_of_service in by_service.values():
        alerts_of_service.sort(key=lambda alert: (alert.starts_at, alert.fingerprint))
    return by_service


def _averages(configs, problems):
    """(service -> the current average of its metric, service -> the highest average over its scale-in duration)
    for target-tracking services, from one query; None when Prometheus failed."""
    if not configs:
        return {}, {}
    ctx = provisioning.render_context()
    specs = [
        rendering.ServiceSpec(
            service_name=config.service_name,
            enabled=True,
            metric=config.metric,
            threshold=config.threshold,
            duration_seconds=config.duration_seconds,
            promql_expression=config.promql_expression or "",
            scale_in_duration_seconds=config.scale_in_duration_seconds,
        )
        for config in configs
    ]
    # The peaks carry a label of their own, so `or` keeps both series of a service.
    query = (
        f"({rendering.averages_query(specs, ctx)}) or "
        f'label_replace({rendering.idle_peaks_query(specs, ctx)}, "{PEAK_LABEL}", "scale_in", "", "")'
    )
    try:
        with prometheus_client() as prometheus:
            series = prometheus.query(query)
    except IntegrationError as exc:
        problems.append(f"Prometheus: {exc}")
        return None
    values, peaks = {}, {}
    for sample in series:
        value = sample.value
        if value is not None and math.isfinite(value):
            into = peaks if sample.labels.get(PEAK_LABEL) else values
            into[sample.labels.get("service")] = value
    return values, peaks


def _signal(config, alerts, averages):
    """The service's signal and the alert it comes from; (None, None) when its source could not be read. A firing
    scale-out alert wins over a scale-in one."""
    if config.policy_type == TARGET_TRACKING:
        if averages is None:
            return None, None
        values, peaks = averages
        return policy.Signal.metric(values.get(config.service_name), peaks.get(config.service_name)), None
    if alerts is None:
        return None, None
    firing = alerts.get(config.service_name) or []
    scale_out = [alert for alert in firing if not alert.scales_in]
    if scale_out:
        return policy.Signal.alert(), scale_out[0]
    if firing:
        return policy.Signal.idle(), firing[0]
    return policy.Signal.none(), None


def evaluator_pass(*, now=None):
    """One pass over every enabled service; returns a PassResult. Never raises for an Alertmanager or Prometheus
    outage: a service whose signal could not be read is decided only when it is below its minimum."""
    started = time.monotonic()
    result = PassResult()
    configs = _configs()
    result.services = len(configs)
    if not configs:
        return result
    alerts = _firing_alerts(result.problems)
    result.firing = sum(len(a) for a in alerts.values()) if alerts else 0
    averages = _averages([c for c in configs if c.policy_type == TARGET_TRACKING], result.problems)
    inputs = intake.DecisionInputs.read(configs, now=now)
    candidates = []
    for config in configs:
        signal, alert = _signal(config, alerts, averages)
        fleet = inputs.fleet(config)
        if signal is None:
            if not fleet.known or fleet.counted >= config.min_instances:
                continue
            signal = policy.Signal.none()  # the signal is unknown, but min can still be kept
        first_look = inputs.decide(config, signal, fleet=fleet)
        if not first_look.acts and intake.same_outcome(first_look.outcome, config.last_outcome):
            continue
        candidates.append((config.pk, signal, alert))
    result.decided = len(candidates)
    # The services to decide again, a batch per transaction: one commit (one fsync) per batch instead of one per
    # service, while a webhook of a service of the batch waits at most for the batch (services are locked in id
    # order, each webhook locks one: no deadlock).
    for start in range(0, len(candidates), DECIDE_BATCH):
        batch = candidates[start : start + DECIDE_BATCH]
        # The batch's triggers are queued together once it has committed (one broker transaction for all).
        with trigger.triggers_queued_together(), transaction.atomic():
            try:
                with transaction.atomic():
                    result.decisions.extend(_batch_decide(batch))
            except IntegrityError:
                # Another run or process claimed one of these actions a moment ago: decide the batch one service
                # at a time, where each claim that collides is recorded as the duplicate it is.
                for config_id, signal, alert in batch:
                    decision = service_decide(config_id=config_id, signal=signal, alert=alert)
                    if decision is not None:
                        result.decisions.append(decision)
    result.seconds = time.monotonic() - started
    return result


def _batch_decide(batch):
    """Decide a batch of services as `service_decide` decides one, in a fixed number of queries: lock their rows
    (in id order, as the webhook locks one), read their inputs and fleets again under the locks, decide each with
    autoscaling.policy.decide, and insert the events and decisions in bulk. Raises IntegrityError when an action's
    claim ("the action after event #N") is already taken: the caller then decides the batch one by one."""
    ids = [config_id for config_id, _signal, _alert in batch]
    locked = AutoscalingConfig.objects.filter(pk__in=ids).order_by("pk")
    if connection.features.has_select_for_update:
        locked = locked.select_for_update(of=("self",))
    list(locked.values_list("pk", flat=True))
    configs = {config.pk: config for config in _configs(ids)}
    inputs = intake.DecisionInputs.read(list(configs.values()))
    decisions, events = [], []
    for config_id, signal, alert in batch:
        config = configs.get(config_id)
        if config is None:  # deleted meanwhile
            continue
        decision = inputs.decide(config, signal)
        decision, removing = intake.scale_in_choose(config=config, decision=decision)
        if config.dry_run:
            decision = policy.would(decision)
        if not decision.acts and intake.same_outcome(decision.outcome, config.last_outcome):
            continue
        why = intake.decision_reason(decision)
        fields = {"service_name": config.service_name, "config": config, "alert_name": alert.name if alert else ""}
        if alert is not None:
            fields.update(fingerprint=alert.fingerprint, starts_at=alert.starts_at)
        row = ScalingDecision(outcome=decision.outcome, **stored(why, "reason"), **fields, dry_run=config.dry_run)
        if decision.acts:
            row.dedup_key = intake.evaluator_dedup_key(
                service_name=config.service_name,
                last_event_id=config.last_id,
                dry_run=config.dry_run,
                last_would_id=config.last_would,
            )
        if decision.acts and not decision.dry_run:  # a dry-run config's would-be action creates no event
            fields = intake.action_event_fields(
                config=config, decision=decision, why=why, alert=alert, removing=removing
            )
            events.append((row, ScaleOutEvent(**fields), removing))
        decisions.append(row)
    if events:
        ScaleOutEvent.objects.bulk_create([event for _row, event, _removing in events])
        for row, event, removing in events:
            row.event = event
            intake.instances_removed_by(event, removing)  # a query per scale-in (scale-outs need none)
    ScalingDecision.objects.bulk_create(decisions)
    if events:
        event_ids = [event.pk for _row, event, _removing in events]
        transaction.on_commit(partial(trigger.event_triggers_queue, event_ids=event_ids))
    return decisions


def service_decide(*, config_id, signal, alert=None):
    """Decide one service under its row lock, through the webhook's path; the ScalingDecision recorded, or None
    when the outcome is the one recorded last (nothing to record)."""
    fields = {"alert_name": alert.name if alert else ""}
    if alert is not None:
        fields.update(fingerprint=alert.fingerprint, starts_at=alert.starts_at)
    with transaction.atomic():
        config = (
            AutoscalingConfig.objects.filter(pk=config_id)
            .only(*intake.DECISION_FIELDS)
            .select_for_update(of=("self",))
            .first()
        )
        if config is None:
            return None
        return intake._decide(
            config=config,
            service_name=config.service_name,
            fields={"service_name": config.service_name, "config": config, **fields},
            dedup_key=None,
            signal=signal,
            alert=alert,
            evaluator=True,
        )


# --- the loop a scheduled task runs -------------------------------------------------------------------------
def _tick(now, interval):
    return datetime.fromtimestamp(math.floor(now.timestamp() / interval) * interval, tz=UTC)


EVALUATOR_TASK = "events.tasks.evaluator_run"
START_CLAIM_SECONDS = 600


def evaluator_resume_at_start():
    """Queue one evaluator run for a task cluster that is starting (called from each of its workers as it is
    spawned; the first one's claim wins), when the evaluator is on and scheduled. Returns True when it queued."""
    from django.core.cache import cache
    from django_q.models import Schedule
    from django_q.tasks import async_task

    if not settings.EVALUATOR_INTERVAL or not Schedule.objects.filter(func=EVALUATOR_TASK).exists():
        return False
    key = f"vmautoscale:evaluator-start:{socket.gethostname()}:{os.getppid()}"
    if not cache.add(key, timezone.now().isoformat(), timeout=START_CLAIM_SECONDS):
        return False
    async_task(EVALUATOR_TASK, task_name="evaluator-resumed-at-start")
    logger.info("evaluator: a run is queued as the task cluster starts")
    return True


def evaluator_run(*, run_seconds=RUN_SECONDS, interval=None, sleep=time.sleep, should_stop=None):
    """Evaluate on every `interval` tick (EVALUATOR_INTERVAL) for up to `run_seconds`, until a newer run takes
    over or `should_stop()` is true. Returns the number of passes run. EVALUATOR_INTERVAL 0 turns the evaluator
    off."""
    should_stop = should_stop or (lambda: False)
    interval = settings.EVALUATOR_INTERVAL if interval is None else interval
    if not interval:
        return 0
    me = uuid.uuid4().hex
    EvaluatorState.objects.get_or_create(pk=1)
    EvaluatorState.objects.filter(pk=1).update(owner=me, owner_since=timezone.now())
    deadline = time.monotonic() + run_seconds
    passes = 0
    while time.monotonic() < deadline:
        if should_stop():
            logger.info("evaluator: the task cluster is stopping; the run ends after %d passes", passes)
            return passes
        # A run lives for minutes: drop a connection the database closed meanwhile (as a worker does per task;
        # never inside a caller's transaction).
        if not transaction.get_connection().in_atomic_block:
            close_old_connections()
        now = timezone.now()
        tick = _tick(now, interval)
        claimed = (
            EvaluatorState.objects.filter(pk=1, owner=me)
            .filter(Q(last_tick__isnull=True) | Q(last_tick__lt=tick))
            .update(last_tick=tick)
        )
        if claimed:
            passes += 1
            _pass_recorded()
        elif not EvaluatorState.objects.filter(pk=1, owner=me).exists():
            logger.info("evaluator: a newer run took over after %d passes", passes)
            return passes
        next_tick = tick.timestamp() + interval
        pause = next_tick - timezone.now().timestamp()
        if time.monotonic() + max(pause, 0) >= deadline:
            break
        _wait(max(pause, 0.01), sleep, should_stop)
    return passes


def _wait(seconds, sleep, should_stop):
    """Sleep `seconds` in slices, returning early once should_stop() is true."""
    until = time.monotonic() + seconds
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        sleep(min(left, STOP_CHECK_SECONDS))
        if should_stop():
            return


def _pass_recorded():
    try:
        result = evaluator_pass()
    except Exception as exc:  # a pass must not end the run: the next tick tries again
        logger.exception("evaluator pass failed")
        EvaluatorState.objects.filter(pk=1).update(last_pass_at=timezone.now(), last_error=str(exc)[:2000])
        return
    if result.problems:
        logger.warning("evaluator: %s", result.summary())
    EvaluatorState.objects.filter(pk=1).update(
        last_pass_at=timezone.now(),
        last_pass_seconds=round(result.seconds, 3),
        last_summary=result.summary(),
        last_error="; ".join(result.problems)[:2000],
    )
