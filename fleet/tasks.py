"""django-q entry points of the fleet: call a service. Each is safe to run twice."""

from fleet import reconcile


def fleet_reconcile():
    """Scheduled every minute: compare every service's instances with vCenter and F5 and bring them in line."""
    result = reconcile.fleet_reconcile()
    return {"run": result.run_id, "ok": result.ok, "lost": result.lost, "changes": len(result.changes)}


def orphans_sweep():
    """Scheduled every 10 minutes: find what no live instance accounts for; remove it when ORPHAN_SWEEP_FIX."""
    from django.conf import settings

    from fleet import orphans

    result = orphans.orphans_sweep(fix=settings.ORPHAN_SWEEP_FIX)
    return {"open": len(result.found), "fixed": len(result.fixed), "errors": result.errors}
