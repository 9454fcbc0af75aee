"""Health of the portal's own parts: the database and the task cluster."""

import logging

from django.db import connection
from django.utils import timezone
from django_q.status import Stat

logger = logging.getLogger(__name__)


def database_state():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any driver error means the database is not usable
        # The driver's text (host names, user names, paths) goes to the log only: /healthz is unauthenticated.
        logger.exception("health check: the database does not answer")
        return {"ok": False, "error": "the database does not answer (see the portal's log)"}
    return {"ok": True}


def task_cluster_state():
    try:
        clusters = Stat.get_all()
    except Exception:  # the broker or cache cannot be read
        logger.exception("health check: the task cluster's state cannot be read")
        return {"ok": False, "clusters": 0, "error": "the task cluster's state cannot be read (see the portal's log)"}
    now = timezone.now()
    alive = [c for c in clusters if c.status not in ("Stopped", "Stopping")]
    return {
        "ok": bool(alive),
        "clusters": len(alive),
        "workers": sum(len(c.workers) for c in alive),
        "checked_at": now.isoformat(),
        **({} if alive else {"error": "no task cluster is running: start it with `manage.py qcluster`"}),
    }


def health():
    db = database_state()
    tasks = task_cluster_state() if db["ok"] else {"ok": False, "error": "database unavailable"}
    return {"ok": db["ok"] and tasks["ok"], "database": db, "task_cluster": tasks}
