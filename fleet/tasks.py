"""django-q entry points of the fleet: call a service. Each is safe to run twice."""

from fleet import reconcile


def fleet_reconcile():
    """Scheduled every minute: compare every service's instances with vCenter and F5 and bring them in line."""
    result = reconcile.fleet_reconcile()
    return {"run": result.run_id, "ok": result.ok, "lost": result.lost, "changes": len(result.changes)}
