"""`manage.py evaluate`: one evaluator pass now (the schedule runs one every EVALUATOR_INTERVAL seconds)."""

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from events import evaluator


class Command(BaseCommand):
    help = _("Run one evaluator pass now: re-decide every enabled service from its firing alerts and metrics.")

    def handle(self, *args, **options):
        result = evaluator.evaluator_pass()
        for decision in result.decisions:
            self.stdout.write(f"{decision.service_name}: {decision.get_outcome_display()}: {decision.reason_text}")
        self.stdout.write(result.summary())
