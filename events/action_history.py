"""What dry-run and the flap guard add to a decision's inputs, as the webhook, the manual requests and the
evaluator load them (events.intake, events.evaluator); the decision itself stays autoscaling.policy.decide.

Dry-run: a dry-run config is decided exactly as a live one; only the action step differs (no event, no trigger:
the decision is recorded with `dry_run` set and a "would" message, autoscaling.policy.would). So that a dry-run
sequence matches what live would have done, its would-be actions count as actions: a dry-run config's last
scale-out (or scale-in) is the newest of its events and its recorded would-be actions, for the cooldowns, and its
would-be actions are its recent actions for the flap guard. A would-be action is done at once (no pipeline runs
for it): it never leaves a scale-out "in progress", a would-be scale-out's VMs warm up from its decision (as if in
service at once), and it changes no fleet count (no VM is created or removed), so a dry-run service under
sustained load says "would scale out" every cooldown where live would reach max.

The flap guard reads each service's actions of the last two hours (autoscaling.flapping.LOOKBACK_SECONDS): its
events (cancelled ones aside) and, for a dry-run config, its would-be actions, as (time, direction) pairs.
"""

from datetime import timedelta

from django.db.models import BigIntegerField, Case, DateTimeField, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest

from autoscaling import flapping
from common.prepared import PreparedQuery
from events.models import ScaleOutEvent, ScalingDecision

Outcome = ScalingDecision.Outcome
WOULD_BE_OUT = (Outcome.SCALE_OUT, Outcome.REPLACE)
WOULD_BE_IN = (Outcome.SCALE_IN,)


def _would_be(outcomes):
    """A config's would-be actions of these outcomes (for a config row: OuterRef("pk"))."""
    return ScalingDecision.objects.filter(config=OuterRef("pk"), dry_run=True, outcome__in=outcomes)


def _newest_would_be(outcomes):
    return Subquery(_would_be(outcomes).order_by("-decided_at", "-pk").values("decided_at")[:1])


def _newest_of(live, outcomes):
    """For a dry-run config, the newer of `live` (its newest event's time) and its newest would-be action's."""
    would = _newest_would_be(outcomes)
    # Greatest is NULL on SQLite when either side is: each side falls back to the other.
    both = Greatest(Coalesce(live, would), Coalesce(would, live))
    return Case(When(dry_run=True, then=both), default=live)


def dry_run_annotations(annotations):
    """events.intake.event_annotations for dry-run configs too: "last_created" and "last_scale_in" count the
    would-be actions; "last_would" is a dry-run config's newest would-be action (its evaluator claim) and
    "last_would_out" when its newest would-be scale-out was decided (its VMs' warm-up)."""
    return {
        **annotations,
        "last_created": _newest_of(annotations["last_created"], WOULD_BE_OUT),
        "last_scale_in": _newest_of(annotations["last_scale_in"], WOULD_BE_IN),
        "last_would": Case(
            When(dry_run=True, then=Subquery(_would_be(ScalingDecision.ACTIONS).order_by("-pk").values("pk")[:1])),
            default=Value(None),
            output_field=BigIntegerField(),
        ),
        "last_would_out": Case(
            When(dry_run=True, then=_newest_would_be(WOULD_BE_OUT)), default=Value(None), output_field=DateTimeField()
        ),
    }


def _actions(events, since):
    return (
        events.filter(created_at__gte=since)
        .exclude(status=ScaleOutEvent.Status.CANCELLED)
        .values("config_id", "created_at", "action")
    )


# One config's (every decision reads them): compiled once (common.prepared).
_CONFIG_ACTIONS = PreparedQuery(
    lambda config_id, since: _actions(ScaleOutEvent.objects.filter(config_id=config_id), since),
    config_id="int",
    since="datetime",
)


def recent_actions(*, configs, now):
    """config id -> its actions of the last two hours as (time, direction) pairs, oldest first (the flap guard's
    input of autoscaling.policy.decide). One query, and one more when any of `configs` is a dry-run config."""
    since = now - timedelta(seconds=flapping.LOOKBACK_SECONDS)
    found = {config.pk: [] for config in configs}
    if len(found) == 1:
        events = _CONFIG_ACTIONS.rows(config_id=next(iter(found)), since=since)
    else:
        events = _actions(ScaleOutEvent.objects.filter(config_id__in=list(found)), since)
    for config_id, created_at, action in (tuple(row.values()) for row in events):
        found[config_id].append((created_at, flapping.IN if action == ScaleOutEvent.Action.SCALE_IN else flapping.OUT))
    dry_run = [config.pk for config in configs if config.dry_run]
    if dry_run:
        would_be = ScalingDecision.objects.filter(
            config_id__in=dry_run, dry_run=True, outcome__in=ScalingDecision.ACTIONS, decided_at__gte=since
        ).values_list("config_id", "decided_at", "outcome")
        for config_id, decided_at, outcome in would_be:
            found[config_id].append((decided_at, flapping.IN if outcome in WOULD_BE_IN else flapping.OUT))
    return {config_id: tuple(sorted(actions)) for config_id, actions in found.items()}
