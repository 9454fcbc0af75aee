"""`manage.py fleet_reconcile [--service S]`: compare the inventory with vCenter and F5 now and print what changed."""

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from fleet import reconcile


class Command(AuditedCommand):
    help = _(
        "Compare the fleet's instances with vCenter and F5 now: VMs that are gone become lost (their IP released, "
        "their F5 member removed), powered-off VMs and members down past the grace period become unhealthy."
    )

    def add_arguments(self, parser):
        parser.add_argument("--service", help=_("Only the instances of this service (its service name)."))

    def handle(self, *args, service=None, **options):
        try:
            result = reconcile.fleet_reconcile(service=service, actor="manage.py fleet_reconcile")
        except reconcile.UnknownService as exc:
            raise CommandError(str(exc)) from None
        for line in result.changes:
            self.stdout.write(line)
        summary = _(
            "%(instances)d instances compared with %(vms)d VMs in %(seconds).2f s: %(lost)d lost, %(unhealthy)d "
            "unhealthy, %(healthy)d healthy; %(vcenter)d vCenter property reads, %(f5)d F5 pool reads."
        ) % {
            "instances": result.instances,
            "vms": result.vms,
            "seconds": result.seconds,
            "lost": result.lost,
            "unhealthy": result.unhealthy,
            "healthy": result.healthy,
            "vcenter": result.vcenter_requests,
            "f5": result.f5_requests,
        }
        if not result.changes:
            self.stdout.write(_("Nothing changed."))
        self.stdout.write(summary)
        if result.errors:
            for error in result.errors:
                self.stderr.write(error)
            raise CommandError(_("The reconcile did not complete: %(count)d error(s).") % {"count": len(result.errors)})
