"""manage.py seed_demo: the demo of `make run` (idempotent; see demo/services.py)."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from demo import services as demo
from integrations.errors import IntegrationError
from lab.core import DEFAULT_RUN_DIR, Lab, LabError
from lab.standins.metrics import StandinError


class Command(BaseCommand):
    help = _(
        "Seed the demo service (template from a simulator VM, IP pool, enabled config watching the metrics "
        "stand-in's VMs) in the running lab and provision it. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help=_("the lab's run directory"))
        parser.add_argument("--service", default=demo.SERVICE, help=_("service name"))
        parser.add_argument("--network", default=demo.NETWORK, help=_("loopback network of the demo's VMs"))

    def handle(self, *args, **options):
        lab = Lab(options["run_dir"])
        plan = demo.DemoPlan(service=options["service"], network=options["network"])
        try:
            result = demo.demo_seed(lab=lab, plan=plan)
        except (demo.DemoError, LabError, IntegrationError, StandinError, ValidationError, OSError) as exc:
            # `make run` seeds on every start: the portal is still worth starting without its demo.
            self.stderr.write(_("The demo was not seeded: %(error)s") % {"error": exc})
            return
        config = result.config
        self.stdout.write(
            _("Demo service %(service)s: template %(template)s, IP pool %(pool)s, watching %(targets)s; %(state)s.")
            % {
                "service": config.service_name,
                "template": result.template.name,
                "pool": result.pool.name,
                "targets": ", ".join(config.monitored_instances),
                "state": config.get_sync_state_display(),
            }
        )
        if config.sync_error:
            self.stderr.write(config.sync_error)
        self.stdout.write(
            _("Raise its CPU load with: manage.py simulate_load %(service)s 180  (back to idle: ... %(service)s 5)")
            % {"service": config.service_name}
        )
