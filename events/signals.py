"""Signal handlers of the events area (thin doors: they call the task cluster's own functions).

`schedules_due_at_start`: django-q2's cluster first looks at its schedules 30 s after it starts, then every 30 s.
After a restart (a deploy, a crash) the evaluator and the sweep would then wait up to half a minute more than they
need to: each worker, once spawned, runs the scheduler once, so what is due is queued at once. The scheduler takes
the schedules' rows with SELECT ... FOR UPDATE and moves each one's next run on, so workers starting together
queue each due schedule once.

`evaluator_resumed_at_start`: the evaluator's run is a long task that the killed or stopped cluster took with it;
its schedule's next run may be a minute away. The first worker spawned in a cluster queues one evaluator run at
once (the others find the cluster's claim taken: a cache key of the host and the sentinel, the workers' parent),
which takes over the loop as the schedule's runs do, so the evaluator resumes within seconds of a restart.

`decider_resumed_at_start`: notifications the webhook stored while the decider was down (or whose decider the
stopped cluster took with it) are decided at once, by one decider the first spawned worker queues.
"""

import logging

logger = logging.getLogger(__name__)


def _in_a_cluster():
    """A worker process of a task cluster: django-q2 also sends post_spawn when it runs a task in-process
    (Q_CLUSTER["sync"], the tests' mode), where queuing from here would run those tasks then and there."""
    from django_q.conf import Conf

    return not Conf.SYNC


def schedules_due_at_start(sender, proc_name, **kwargs):
    from django_q.conf import Conf
    from django_q.scheduler import scheduler

    if not Conf.SCHEDULER or not _in_a_cluster():
        return
    try:
        scheduler()
    except Exception:  # the guard's own call 30 s later tries again
        logger.exception("%s: the schedules due at start were not queued", proc_name)


def evaluator_resumed_at_start(sender, proc_name, **kwargs):
    from events import evaluator

    if not _in_a_cluster():
        return
    try:
        evaluator.evaluator_resume_at_start()
    except Exception:  # the schedule's next run starts it anyway
        logger.exception("%s: the evaluator was not resumed at start", proc_name)


def decider_resumed_at_start(sender, proc_name, **kwargs):
    import os
    import socket

    from events import intake

    if not _in_a_cluster():
        return
    try:
        intake.decider_queue_for_waiting(claim=f"vmautoscale:decider-start:{socket.gethostname()}:{os.getppid()}")
    except Exception:  # the sweep queues it within a minute anyway
        logger.exception("%s: the decider was not resumed at start", proc_name)


def connect():
    from django_q.signals import post_spawn

    post_spawn.connect(schedules_due_at_start, dispatch_uid="events.schedules_due_at_start")
    post_spawn.connect(evaluator_resumed_at_start, dispatch_uid="events.evaluator_resumed_at_start")
    post_spawn.connect(decider_resumed_at_start, dispatch_uid="events.decider_resumed_at_start")
