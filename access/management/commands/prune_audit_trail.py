"""`manage.py prune_audit_trail [--days N]`: delete the audit entries older than the retention."""

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access import audit
from access.commands import AuditedCommand


class Command(AuditedCommand):
    help = _("Delete audit entries older than AUDIT_RETENTION_DAYS (or --days); 0 days keeps everything.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help=_("Keep this many days instead of AUDIT_RETENTION_DAYS."))

    def handle(self, *args, days=None, **options):
        if days is not None and days < 0:
            raise CommandError(_("--days must be 0 or more."))
        count = audit.entries_prune(days=days)
        self.stdout.write(_("%(count)d audit entries deleted.") % {"count": count})
