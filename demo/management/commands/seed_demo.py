"""manage.py seed_demo: the demo of `make run` (idempotent; see demo/services.py)."""

import ipaddress

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from demo import services as demo
from integrations.errors import IntegrationError
from lab.core import DEFAULT_RUN_DIR, Lab, LabError
from lab.standins.metrics import StandinError


class Command(AuditedCommand):
    help = _(
        "Seed the demo service (template from a simulator VM, IP pool, enabled config watching the metrics "
        "stand-in's VMs) in the running lab and provision it. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help=_("the lab's run directory"))
        parser.add_argument("--service", default=demo.SERVICE, help=_("service name"))
        parser.add_argument(
            "--network",
            default=None,
            help=_("loopback network of the demo's VMs (default: the one it has, else the first free from %(net)s)")
            % {"net": demo.NETWORK},
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help=_(
                "first return the demo to its starting state: delete its events, instances, IP allocations and "
                "config, destroy its clones in the simulator"
            ),
        )

    def handle(self, *args, **options):
        if options["network"]:
            try:
                network = ipaddress.IPv4Network(options["network"], strict=False)
            except ValueError as exc:
                raise CommandError(_("--network: %(error)s") % {"error": exc}) from exc
            if not network.is_loopback:
                raise CommandError(_("--network: %(network)s is not in 127.0.0.0/8.") % {"network": network})
        lab = Lab(options["run_dir"])
        plan = demo.DemoPlan(service=options["service"])
        if options["reset"]:
            try:
                reset = demo.demo_reset(lab=lab, plan=plan)
            except (LabError, IntegrationError, StandinError, OSError) as exc:
                raise CommandError(_("The demo was not reset: %(error)s") % {"error": exc}) from exc
            self.stdout.write(
                _(
                    "Demo %(service)s reset: %(events)d scale-out events and %(instances)d instances deleted, "
                    "VMs destroyed in the simulator: %(vms)s."
                )
                % {
                    "service": plan.service,
                    "events": reset.events,
                    "instances": reset.instances,
                    "vms": ", ".join(reset.vms) or _("none"),
                }
            )
        try:
            chosen = demo.demo_network_choose(lab=lab, plan=plan, requested=options["network"])
            plan.network = chosen.network
            for network, taken in chosen.skipped.items():
                self.stdout.write(
                    _("Network %(network)s is taken (%(addresses)s in use by another program).")
                    % {"network": network, "addresses": ", ".join(taken[:2])}
                )
            self.stdout.write(
                (
                    _("Demo network: %(network)s (kept from the last start).")
                    if chosen.kept
                    else _("Demo network: %(network)s.")
                )
                % {"network": chosen.network}
            )
            result = demo.demo_seed(lab=lab, plan=plan)
        except (demo.DemoError, LabError, IntegrationError, StandinError, ValidationError, OSError) as exc:
            # `make run` seeds on every start: the portal is still worth starting without its demo.
            self.stderr.write(_("The demo was not seeded: %(error)s") % {"error": exc})
            self.stderr.write(
                _(
                    "Fix it, then run manage.py seed_demo again (make run does on every start); --network 127.0.N.0/24 "
                    "puts the demo elsewhere, --reset starts it over; python -m lab status shows the lab."
                )
            )
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
