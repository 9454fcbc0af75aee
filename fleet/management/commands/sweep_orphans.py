"""`manage.py sweep_orphans [--fix] [--service S]`: find what no live instance accounts for, and remove it."""

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from fleet import orphans


class Command(AuditedCommand):
    help = _(
        "Find orphans: VMs with the portal's marker and no live instance, members of managed F5 pools at addresses "
        "of the service's IP pool that no live instance holds, IP allocations held by no live instance. With --fix, "
        "remove those past FLEET_ORPHAN_GRACE (a VM is powered off, then destroyed after FLEET_ORPHAN_DESTROY_GRACE). "
        "A VM without the marker is never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help=_("Remove the orphans past their grace period."))
        parser.add_argument("--service", help=_("Only this service's pools, allocations and marked VMs."))

    def handle(self, *args, fix=False, service=None, **options):
        try:
            result = orphans.orphans_sweep(fix=fix, service=service, actor="manage.py sweep_orphans")
        except orphans.UnknownService as exc:
            raise CommandError(str(exc)) from None
        now = timezone.now()
        for row in result.found:
            self.stdout.write(
                f"{row.get_kind_display()}: {row.name} ({row.get_state_display()}, "
                + _("an orphan for %(age)s") % {"age": timesince(row.first_seen_at, now)}
                + f"): {row.reason}"
            )
        for line in result.fixed:
            self.stdout.write(line)
        self.stdout.write(
            _("%(open)d orphan(s), %(fixed)d removed, %(closed)d no longer orphans, in %(seconds).2f s.")
            % {
                "open": len(result.found),
                "fixed": len(result.fixed),
                "closed": result.closed,
                "seconds": result.seconds,
            }
        )
        if result.found and not fix:
            self.stdout.write(
                _("Run with --fix to remove those that have been orphans for %(grace)d s.")
                % {"grace": settings.FLEET_ORPHAN_GRACE}
            )
        if result.errors:
            for error in result.errors:
                self.stderr.write(error)
            raise CommandError(_("The sweep did not complete: %(count)d error(s).") % {"count": len(result.errors)})
