"""manage.py simulate_load SERVICE PERCENT: set a service's load in the lab's metrics stand-in."""

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from demo import services as demo
from lab.core import DEFAULT_RUN_DIR, Lab, LabError
from lab.standins.metrics import StandinError


class Command(AuditedCommand):
    help = _(
        "Set a service's total load (percent of one VM, shared by its powered-on VMs) in the lab's metrics stand-in."
    )

    def add_arguments(self, parser):
        parser.add_argument("service")
        parser.add_argument("percent", type=float)
        parser.add_argument("--metric", choices=["cpu", "memory"], default="cpu")
        parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help=_("the lab's run directory"))

    def handle(self, *args, **options):
        if options["percent"] < 0:
            raise CommandError(_("percent: must be 0 or more."))
        lab = Lab(options["run_dir"])
        if not lab.running("metrics"):
            raise CommandError(_("The lab's metrics stand-in is not running: start the lab with make run."))
        try:
            state = demo.demo_load_set(
                lab=lab,
                service=options["service"],
                percent=options["percent"],
                metric=options["metric"],
            )
        except (demo.DemoError, LabError, StandinError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        running = state["powered_on"] or 1
        key = f"{options['metric']}_percent"
        self.stdout.write(
            _("%(service)s: %(metric)s load %(total).0f%% over %(count)d VM(s), %(each).1f%% each.")
            % {
                "service": options["service"],
                "metric": options["metric"],
                "total": state[key],
                "count": state["powered_on"],
                "each": min(100.0, state[key] / running),
            }
        )
