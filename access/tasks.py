"""django-q entry points of the access app."""

from access import audit


def audit_prune():
    """Delete audit entries past the retention (a daily schedule); returns how many."""
    return audit.entries_prune()
