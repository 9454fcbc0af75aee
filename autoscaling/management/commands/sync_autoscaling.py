"""`manage.py sync_autoscaling [--check]`: run a provisioning pass now, or only compare the host with the portal."""

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from autoscaling import services
from autoscaling.models import ProvisioningRun


class Command(AuditedCommand):
    help = _(
        "Push the autoscaling configs to Prometheus, Alertmanager and Jenkins. With --check, only print how the host "
        "and Jenkins differ from the configs and exit 1 when they do."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help=_("Change nothing; print the difference; exit 1 when the host or Jenkins differs."),
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help=_("Seconds to wait for a running pass to finish (default 60)."),
        )

    def handle(self, *args, check=False, wait=60.0, **options):
        run = services.provisioning_run(reason="manage.py sync_autoscaling", check_only=check, wait=wait)
        if run.status == ProvisioningRun.Status.QUEUED:
            raise CommandError(run.error or _("Another pass is running; try again."))
        if run.diff:
            self.stdout.write(run.diff)
        for path in run.drift:
            self.stdout.write(_("changed on the host since the last push: %(path)s") % {"path": path})
        summary = _("%(status)s: %(files)d files, %(jobs)d Jenkins jobs, reloads: %(reloads)s") % {
            "status": run.get_status_display(),
            "files": len(run.changed_files),
            "jobs": len(run.jenkins_changes),
            "reloads": ", ".join(run.reloads) or _("none"),
        }
        if run.status == ProvisioningRun.Status.FAILED:
            self.stderr.write(run.error)
            raise CommandError(summary)
        self.stdout.write(summary)
        if check and run.status == ProvisioningRun.Status.DIFFERS:
            raise SystemExit(1)
