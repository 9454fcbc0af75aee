"""Signal handlers of the events area (thin doors: they call the task cluster's own functions).

`schedules_due_at_start`: django-q2's cluster first looks at its schedules 30 s after it starts, then every 30 s.
After a restart (a deploy, a crash) the evaluator and the sweep would then wait up to half a minute more than they
need to: each worker, once spawned, runs the scheduler once, so what is due is queued at once. The scheduler takes
the schedules' rows with SELECT ... FOR UPDATE and moves each one's next run on, so workers starting together
queue each due schedule once.
"""

import logging

logger = logging.getLogger(__name__)


def schedules_due_at_start(sender, proc_name, **kwargs):
    from django_q.conf import Conf
    from django_q.scheduler import scheduler

    if not Conf.SCHEDULER:
        return
    try:
        scheduler()
    except Exception:  # the guard's own call 30 s later tries again
        logger.exception("%s: the schedules due at start were not queued", proc_name)


def connect():
    from django_q.signals import post_spawn

    post_spawn.connect(schedules_due_at_start, dispatch_uid="events.schedules_due_at_start")
