"""The safety nets in the database, below the events: what the decision reads of them (`configs_safety`: two
queries for any number of services), what the admin and the API show, and the operators' doors (suspend and resume
processes, resume the circuit breaker at once).

What they hold is decided by the pure decision (autoscaling/safety.py, called from autoscaling.policy.decide).
The breaker's count of consecutive failed scale-outs is written as events finish (events/safety.py).
"""

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from access import audit
from autoscaling import safety
from autoscaling.models import AutoscalingConfig, CircuitBreaker, ProcessSuspension
from common.prepared import PreparedQuery


class SafetyRefused(Exception):
    """An operator's request that cannot be done as asked (an unknown process); the message says why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


# --- what the decision reads ---------------------------------------------------------------------------------
def breaker_threshold():
    return settings.SCALE_OUT_BREAKER_FAILURES


def _suspensions(suspensions):
    return suspensions.values("config_id", "process", "reason", "suspended_at", "suspended_by__username")


def _breakers(breakers):
    return breakers.values("config_id", "failures", "last_failure_at")


# One config's (every decision reads them): compiled once (common.prepared).
_CONFIG_SUSPENSIONS = PreparedQuery(
    lambda config_id: _suspensions(ProcessSuspension.objects.filter(config_id=config_id)), config_id="int"
)
_CONFIG_BREAKER = PreparedQuery(
    lambda config_id: _breakers(CircuitBreaker.objects.filter(config_id=config_id)), config_id="int"
)


def configs_safety(*, config_ids):
    """{config id: autoscaling.safety.Safety} for the given configs, in two queries."""
    ids = list(config_ids)
    if len(ids) == 1:
        suspension_rows = _CONFIG_SUSPENSIONS.rows(config_id=ids[0])
        breaker_rows = _CONFIG_BREAKER.rows(config_id=ids[0])
    else:
        suspension_rows = _suspensions(ProcessSuspension.objects.filter(config_id__in=ids))
        breaker_rows = _breakers(CircuitBreaker.objects.filter(config_id__in=ids))
    suspended = {config_id: {} for config_id in ids}
    for row in suspension_rows:
        suspended[row["config_id"]][row["process"]] = safety.Suspended(
            reason=row["reason"], by=row["suspended_by__username"] or "", since=row["suspended_at"]
        )
    threshold = breaker_threshold()
    breakers = {
        row["config_id"]: safety.Breaker(
            failures=row["failures"], last_failure_at=row["last_failure_at"], threshold=threshold
        )
        for row in breaker_rows
    }
    return {
        config_id: safety.Safety(
            suspended=suspended[config_id], breaker=breakers.get(config_id, safety.Breaker(threshold=threshold))
        )
        for config_id in ids
    }


def config_safety(*, config):
    return configs_safety(config_ids=[config.pk])[config.pk]


def breaker_state(*, config):
    """What the admin and the API show of a config's breaker: a dict (state "closed" / "open", the failures, the
    threshold, when it opened, when it retries, the last failed event, who resumed it last and when). Reads
    `config.breaker` (select_related("breaker__reset_by") makes a list cost no query per config)."""
    try:
        row = config.breaker
    except CircuitBreaker.DoesNotExist:
        row = None
    breaker = safety.Breaker(
        failures=row.failures if row else 0,
        last_failure_at=row.last_failure_at if row else None,
        threshold=breaker_threshold(),
    )
    return {
        "state": "open" if breaker.is_open else "closed",
        "failures": breaker.failures,
        "threshold": breaker.threshold,
        "opened_at": row.opened_at if row and breaker.is_open else None,
        "retry_at": breaker.retry_at,
        "last_failure_at": breaker.last_failure_at,
        "last_failed_event": row.last_failed_event_id if row else None,
        "resumed_at": row.reset_at if row else None,
        "resumed_by": row.reset_by.get_username() if row and row.reset_by else "",
    }


# --- the operators' doors ------------------------------------------------------------------------------------
def _processes(processes):
    processes = list(dict.fromkeys(processes or safety.PROCESSES))
    unknown = [process for process in processes if process not in safety.PROCESSES]
    if unknown:
        raise SafetyRefused(
            _("Unknown process %(unknown)s; one of %(known)s.")
            % {"unknown": ", ".join(unknown), "known": ", ".join(safety.PROCESSES)}
        )
    return processes


def config_processes_suspend(*, config, processes=None, reason="", user=None):
    """Suspend the config's `processes` (None: all four) with the operator's reason; a process already suspended
    keeps its first suspension. Returns the processes newly suspended."""
    processes = _processes(processes)
    now = timezone.now()
    with transaction.atomic():
        AutoscalingConfig.objects.select_for_update().filter(pk=config.pk).values_list("pk", flat=True).first()
        have = set(ProcessSuspension.objects.filter(config=config).values_list("process", flat=True))
        new = [process for process in processes if process not in have]
        ProcessSuspension.objects.bulk_create(
            ProcessSuspension(
                config=config,
                process=process,
                reason=(reason or "")[:500],
                suspended_by=user if user is not None and user.is_authenticated else None,
                suspended_at=now,
            )
            for process in new
        )
        if new:
            audit.operator_action(
                name="suspend", instance=config, user=user, details={"processes": new, "reason": reason}
            )
    return new


def config_processes_resume(*, config, processes=None, user=None):
    """Resume the config's `processes` (None: all of them). Returns the processes resumed."""
    processes = _processes(processes)
    with transaction.atomic():
        rows = ProcessSuspension.objects.filter(config=config, process__in=processes)
        resumed = sorted(rows.values_list("process", flat=True))
        rows.delete()
        if resumed:
            audit.operator_action(name="resume", instance=config, user=user, details={"processes": resumed})
    return resumed


def config_breaker_resume(*, config, user=None):
    """An operator closes the config's circuit breaker at once: its count of consecutive failures starts again
    from 0. Returns whether it was open."""
    now = timezone.now()
    with transaction.atomic():
        breaker, _created = CircuitBreaker.objects.select_for_update().get_or_create(config=config)
        was_open = safety.Breaker(failures=breaker.failures, threshold=breaker_threshold()).is_open
        CircuitBreaker.objects.filter(pk=breaker.pk).update(
            failures=0,
            opened_at=None,
            reset_at=now,
            reset_by=user if user is not None and user.is_authenticated else None,
        )
        audit.operator_action(
            name="breaker_resume",
            instance=config,
            user=user,
            details={"was_open": was_open, "failures": breaker.failures},
        )
    return was_open
