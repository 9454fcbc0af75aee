"""Health of the portal's own parts: the database and the task cluster."""

from django.db import connection
from django.utils import timezone
from django_q.status import Stat


def database_state():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means the database is not usable
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


def task_cluster_state():
    try:
        clusters = Stat.get_all()
    except Exception as exc:  # the broker or cache cannot be read
        return {"ok": False, "clusters": 0, "error": str(exc)}
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
