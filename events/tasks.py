"""django-q entry points of the events app: load by id, call a service. Each is safe to run twice."""

from events import build_logs, evaluator, sweep, trigger


def event_trigger(event_id):
    """Start the Jenkins build of a pending scale-out event (a claim makes a second run a no-op)."""
    return trigger.event_trigger(event_id=event_id)


def event_build_number_follow(event_id):
    """Wait (bounded) for a triggered event's queue item to become a build and store its number."""
    return trigger.event_build_number_follow(event_id=event_id)


def event_sweep():
    """Scheduled every minute: re-queue events left pending, fill in build numbers, queue log fetches."""
    return sweep.event_sweep()


def event_build_log_fetch(event_id):
    """Store the (tail of the) console log of a finished event's build."""
    return build_logs.event_build_log_fetch(event_id=event_id)


def evaluator_run():
    """Scheduled every minute: evaluate every EVALUATOR_INTERVAL seconds until the next run takes over."""
    return evaluator.evaluator_run()
