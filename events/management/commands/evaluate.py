"""`manage.py evaluate`: one evaluator pass now (the schedule runs one every EVALUATOR_INTERVAL seconds)."""

from django.utils.translation import gettext as _

from access.commands import AuditedCommand
from events import evaluator


class Command(AuditedCommand):
    help = _("Run one evaluator pass now: re-decide every enabled service from its firing alerts and metrics.")

    def handle(self, *args, **options):
        result = evaluator.evaluator_pass()
        for decision in result.decisions:
            self.stdout.write(f"{decision.service_name}: {decision.get_outcome_display()}: {decision.reason_text}")
        self.stdout.write(result.summary())
