"""`manage.py prune_history [--dry-run]`: apply the retention settings to the event history now."""

from django.conf import settings
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from events import history


class Command(AuditedCommand):
    help = _(
        "Delete the notifications, decisions and pipeline steps older than HISTORY_RETENTION_DAYS and the finished "
        "events older than EVENT_RETENTION_DAYS (0 keeps them); the /metrics counters keep counting them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help=_("Only count what would be deleted."))

    def handle(self, *args, dry_run=False, **options):
        done = history.history_prune(dry_run=dry_run)
        labels = {
            "notifications": _("notifications"),
            "decisions": _("decisions"),
            "steps": _("pipeline steps"),
            "events": _("events"),
        }
        verb = _("would be deleted") if dry_run else _("deleted")
        for what, n in done.items():
            self.stdout.write(f"{labels[what]}: {n} {verb}")
        self.stdout.write(
            _("Retention: %(history)s days for notifications, decisions and steps; %(events)s days for events.")
            % {
                "history": settings.HISTORY_RETENTION_DAYS or _("forever"),
                "events": settings.EVENT_RETENTION_DAYS or _("forever"),
            }
        )
