"""django-q entry points of the events app that a schedule names by its dotted path (a database row needs a
string). Work queued by the services themselves names the service function directly."""

from events import evaluator, sweep


def event_sweep():
    """Scheduled every minute: re-queue events left pending, fill in build numbers, queue log fetches."""
    return sweep.event_sweep()


def evaluator_run():
    """Scheduled every minute: evaluate every EVALUATOR_INTERVAL seconds until the next run takes over."""
    return evaluator.evaluator_run()


def history_maintain():
    """Scheduled every 5 minutes: fold the settled history into the metrics' checkpoint; once a day, prune it."""
    from events import history

    return history.history_maintain()
