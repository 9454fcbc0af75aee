"""The task cluster's start hooks (events/signals.py) act only in a real cluster's worker: django-q2 also sends
post_spawn when it runs a task in-process (sync mode), where they would run the scheduler's tasks then and there."""

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule
from django_q.tasks import async_task

from events import evaluator

pytestmark = pytest.mark.django_db


def test_a_task_run_in_process_runs_no_schedule_and_no_evaluator(monkeypatch, settings):
    monkeypatch.setattr(Conf, "SYNC", True)
    settings.EVALUATOR_INTERVAL = 15
    Schedule.objects.filter(func=evaluator.EVALUATOR_TASK).update(next_run=timezone.now())  # the migration's
    ran = []
    monkeypatch.setattr(evaluator, "evaluator_run", lambda **kwargs: ran.append("evaluator"))
    assert async_task("math.floor", 2.5, sync=True) is not None  # a worker runs it in-process: post_spawn is sent
    assert ran == []
    assert (
        Schedule.objects.filter(func=evaluator.EVALUATOR_TASK).get().next_run <= timezone.now()
    )  # not run by the hook
