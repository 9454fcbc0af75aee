"""The safety nets of the scaling decision, pure like autoscaling/policy.py: the circuit breaker of a service's
scale-outs and the processes an operator suspended.

`autoscaling.policy.decide` reads a `Safety` (built from the database by events/safety.py) and asks `intake_hold`
before it reads an alert, and `action_hold` once it has decided to act. No ORM, no settings, no clock.

The circuit breaker: after `threshold` consecutive failed scale-outs (default 3, SCALE_OUT_BREAKER_FAILURES) the
breaker is open and no scale-out or replacement is triggered. It retries after a back-off counted from the last
failure (5, 10, 20, then every 30 min) with a single trial scale-out of one VM; the trial's success closes it (the
count of consecutive failures goes back to 0), its failure opens it again with the next back-off. An operator's
resume closes it at once. Scale-in is not held by the breaker: it creates no VM.

Suspended processes: scale-out (every scale-out, an operator's manual one included), scale-in (an operator's
removal included), replace (bringing a service below its minimum back to it) and alert intake (a notification is
stored, its alerts are not acted on; the evaluator does not act on firing alerts either; the minimum is still kept
unless replacement is suspended too).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The processes an operator can suspend, as ProcessSuspension.Process stores them.
SCALE_OUT = "scale_out"
SCALE_IN = "scale_in"
REPLACE = "replace"
INTAKE = "intake"
PROCESSES = (SCALE_OUT, SCALE_IN, REPLACE, INTAKE)

# Outcomes of a held decision, as ScalingDecision.Outcome stores them.
SUSPENDED = "suspended"
BREAKER_OPEN = "breaker_open"

DEFAULT_BREAKER_FAILURES = 3
# The waits before each trial scale-out of an open breaker: the first, the second, the third, then every one after.
BACKOFF_SECONDS = (300, 600, 1200, 1800)


def gettext_noop(message):
    """Marks a message id for translation; the caller translates it."""
    return message


@dataclass(frozen=True)
class Suspended:
    """One suspended process: the operator's reason, who (a user name) and since when."""

    reason: str = ""
    by: str = ""
    since: datetime | None = None


@dataclass(frozen=True)
class Breaker:
    failures: int = 0  # consecutive failed scale-outs (since the last success or an operator's resume)
    last_failure_at: datetime | None = None
    threshold: int = DEFAULT_BREAKER_FAILURES

    @property
    def is_open(self):
        return self.threshold > 0 and self.failures >= self.threshold

    @property
    def trials_failed(self):
        """How many trial scale-outs failed since the breaker opened."""
        return max(self.failures - self.threshold, 0)

    @property
    def backoff_seconds(self):
        return BACKOFF_SECONDS[min(self.trials_failed, len(BACKOFF_SECONDS) - 1)]

    @property
    def retry_at(self):
        """When the open breaker allows its next trial scale-out (None: closed, or no failure time known)."""
        if not self.is_open or self.last_failure_at is None:
            return None
        return self.last_failure_at + timedelta(seconds=self.backoff_seconds)

    def trial_due(self, now):
        retry_at = self.retry_at
        return retry_at is not None and now >= retry_at


@dataclass(frozen=True)
class Safety:
    suspended: dict = field(default_factory=dict)  # process -> Suspended
    breaker: Breaker = Breaker()


NONE = Safety()

_SUSPENDED_MESSAGES = {
    SCALE_OUT: gettext_noop(
        "Scale-out of “%(service)s” is suspended (by %(by)s since %(since)s: %(reason)s): %(count)d VM(s) not added."
    ),
    REPLACE: gettext_noop(
        "Replacement of lost instances of “%(service)s” is suspended (by %(by)s since %(since)s: %(reason)s): "
        "%(count)d VM(s) not added."
    ),
    SCALE_IN: gettext_noop(
        "Scale-in of “%(service)s” is suspended (by %(by)s since %(since)s: %(reason)s): %(count)d VM(s) not removed."
    ),
    INTAKE: gettext_noop(
        "Alert intake of “%(service)s” is suspended (by %(by)s since %(since)s: %(reason)s): the alert is stored, "
        "not acted on."
    ),
}


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if moment else "-"


def _suspended(safety, process, service_name, count=0):
    suspended = safety.suspended[process]
    params = {
        "service": service_name,
        "by": suspended.by or "-",
        "since": _when(suspended.since),
        "reason": suspended.reason or "-",
        "count": count,
    }
    return SUSPENDED, _SUSPENDED_MESSAGES[process], params


def intake_hold(safety, *, service_name):
    """(outcome, message id, params) when the service's alert intake is suspended; None otherwise."""
    if INTAKE in safety.suspended:
        return _suspended(safety, INTAKE, service_name)
    return None


def action_process(outcome, source):
    """The process an action belongs to: a scale-out, a replacement (below the minimum) or a scale-in."""
    if outcome == "scale_in":
        return SCALE_IN
    if outcome == "replace" or source == "replace":
        return REPLACE
    return SCALE_OUT


def action_hold(safety, *, outcome, source, count, service_name, now):
    """What becomes of an action: (outcome, message id, params) when it is held (its process suspended, or the
    breaker open); "trial" when it goes as the open breaker's single trial scale-out; None when it goes as
    decided."""
    process = action_process(outcome, source)
    if process in safety.suspended:
        return _suspended(safety, process, service_name, count)
    breaker = safety.breaker
    if process == SCALE_IN or not breaker.is_open:
        return None
    if breaker.trial_due(now):
        return "trial"
    return (
        BREAKER_OPEN,
        gettext_noop(
            "Circuit breaker open: the last %(failures)d scale-outs of “%(service)s” failed; nothing is triggered "
            "until a single trial scale-out at %(retry)s (after %(backoff)d min), or until an operator resumes it. "
            "%(count)d VM(s) not added."
        ),
        {
            "failures": breaker.failures,
            "service": service_name,
            "retry": _when(breaker.retry_at),
            "backoff": breaker.backoff_seconds // 60,
            "count": count,
        },
    )


TRIAL_MESSAGE = gettext_noop(
    "Circuit breaker trial: after %(failures)d consecutive failed scale-outs of “%(service)s”, a single trial "
    "scale-out of 1 VM (its success closes the breaker)."
)
