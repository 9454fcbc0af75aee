"""django-q entry points of the events app that a schedule names by its dotted path (a database row needs a
string). Work queued by the services themselves names the service function directly."""

import os
import socket

from events import evaluator, sweep


def event_sweep():
    """Scheduled every minute: re-queue events left pending, fill in build numbers, queue log fetches."""
    return sweep.event_sweep()


def evaluator_run():
    """Scheduled every minute: evaluate every EVALUATOR_INTERVAL seconds until the next run takes over, or until
    the task cluster running it stops."""
    return evaluator.evaluator_run(should_stop=cluster_stopping_check())


def cluster_stopping_check():
    """A check that is true once the task cluster this worker belongs to is stopping; never true outside one.

    A stopping cluster sends its workers no signal: its sentinel (this worker's parent) stops the task pusher, then
    waits for every worker to finish its task, and meanwhile publishes its status, "Stopping", as django-q2's
    cluster statistics (what `qmonitor` and `qinfo` show) every few tenths of a second. The check reads that one
    statistic (a cache read). A statistic that has expired (a busy sentinel) does not count as stopping.
    """
    from django_q.conf import Conf
    from django_q.status import Stat

    parent, host = os.getppid(), socket.gethostname()
    try:
        mine = next((s for s in Stat.get_all() if s.sentinel == parent and s.host == host), None)
    except Exception:  # no cache to read (a worker outside a cluster): nothing tells it to stop
        mine = None
    if mine is None:
        return lambda: False
    stopping = {str(Conf.STOPPING), str(Conf.STOPPED)}

    def check():
        try:
            stat = Stat.get(pid=mine.pid, cluster_id=mine.cluster_id)
        except Exception:  # the cache could not be read this time: look again at the next slice
            return False
        return isinstance(stat, Stat) and str(stat.status) in stopping

    return check


def history_maintain():
    """Scheduled every 5 minutes: fold the settled history into the metrics' checkpoint; once a day, prune it."""
    from events import history

    return history.history_maintain()
