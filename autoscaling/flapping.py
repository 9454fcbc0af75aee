"""The flap guard, pure: the config check that refuses a scale-in threshold too close to the scale-out threshold, and
the run-time hold of scale-in after the service reversed twice within an hour.

No ORM, no settings, no clock (autoscaling.policy.decide calls `scale_in_hold`; the config's clean() calls
`threshold_flap`).

The thresholds' semantics (autoscaling.rendering): the scale-out rule fires while the fleet's average is above the
scale-out threshold H (`expr > H`), the scale-in rule while it is below the scale-in threshold L (`expr < L`); both
metrics (CPU, memory, or a custom expression yielding a percentage) are "higher is busier". A scale-in at n VMs
removes k = min(scale-in step, n - min) VMs, and the load of n VMs just below L spreads over n - k VMs: just below
L x n / (n - k). The scale-out rule can then fire exactly when L x n / (n - k) > H. n runs over the fleet sizes at
which a scale-in can happen (above min, at least 2, up to max); the smallest n is the worst.

At run time: the service's actions of the last two hours, as (time, direction) pairs. Out, in, out within an hour
(FLAP_WINDOW_SECONDS, from the first scale-out to the last) is two reversals; the next scale-in would be a third, so
scale-in is held for FLAP_HOLD_SECONDS from that last scale-out. Scale-outs are never held (a service that needs
capacity gets it); an operator's removal of one instance is not held either.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

OUT = "out"
IN = "in"
FLAP_WINDOW_SECONDS = 3600
FLAP_HOLD_SECONDS = 3600
# How far back the callers read a service's actions: the window and the hold that may follow it.
LOOKBACK_SECONDS = FLAP_WINDOW_SECONDS + FLAP_HOLD_SECONDS


@dataclass(frozen=True)
class ThresholdFlap:
    """Where a scale-in threshold makes the service flap: at `n` VMs, removing `removed` leaves the load of the
    scale-in threshold at `after` % on `n - removed` VMs, above the scale-out threshold. `safe`: the highest
    scale-in threshold (one decimal, rounded down) that flaps at no fleet size."""

    n: int
    removed: int
    after: float
    safe: float


def threshold_flap(*, scale_out_threshold, scale_in_threshold, min_instances, max_instances, scale_in_step=1):
    """The first fleet size at which a scale-in at the scale-in threshold would push the average over the
    scale-out threshold (a ThresholdFlap), or None when no size between min and max does."""
    high, low = float(scale_out_threshold), float(scale_in_threshold)
    step = max(int(scale_in_step or 1), 1)
    sizes = range(max(min_instances + 1, 2), max_instances + 1)
    first, safe = None, math.inf
    for n in sizes:
        removed = min(step, n - min_instances)
        after = low * n / (n - removed)
        safe = min(safe, high * (n - removed) / n)
        if first is None and after > high + 1e-9:
            first = (n, removed, after)
    if first is None:
        return None
    n, removed, after = first
    return ThresholdFlap(n=n, removed=removed, after=after, safe=math.floor(safe * 10 + 1e-9) / 10)


@dataclass(frozen=True)
class Hold:
    """Scale-in is held until `until`: the service went out, in and out again within the window, the last
    scale-out at `since`, with `reversals` direction changes in that window."""

    since: datetime
    until: datetime
    reversals: int


def scale_in_hold(recent_actions, *, now):
    """The hold on scale-in at `now` (a Hold), or None. `recent_actions`: (time, OUT or IN) pairs, any order."""
    actions = sorted((time, direction) for time, direction in recent_actions or () if direction in (OUT, IN))
    window = timedelta(seconds=FLAP_WINDOW_SECONDS)
    last_out = out_before_last_in = flapped_at = None
    for time, direction in actions:
        if direction == IN:
            out_before_last_in = last_out
        else:
            if out_before_last_in is not None and time - out_before_last_in <= window:
                flapped_at = time
            last_out = time
    if flapped_at is None:
        return None
    until = flapped_at + timedelta(seconds=FLAP_HOLD_SECONDS)
    if now >= until:
        return None
    directions = [direction for time, direction in actions if flapped_at - window <= time <= flapped_at]
    reversals = sum(1 for before, after in zip(directions, directions[1:], strict=False) if before != after)
    return Hold(since=flapped_at, until=until, reversals=reversals)
