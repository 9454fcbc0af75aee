from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from integrations.errors import IntegrationError
from templates_app import services


class Command(AuditedCommand):
    help = _("Import templates from vCenter, refresh their facts and mark vanished ones missing.")

    def handle(self, *args, **options):
        try:
            result = services.templates_sync()
        except IntegrationError as exc:
            raise CommandError(exc.message) from None
        for name in result.created:
            self.stdout.write(_("imported: %(name)s") % {"name": name})
        for name in result.missing:
            self.stdout.write(_("missing: %(name)s") % {"name": name})
        for line in result.skipped:
            self.stdout.write(_("skipped: %(line)s") % {"line": line})
        self.stdout.write(self.style.SUCCESS(result.summary()))
