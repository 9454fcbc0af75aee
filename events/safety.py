"""The circuit breaker's count, as scale-outs finish: events.status.event_status_set calls
`breaker_event_finished` when an event reaches a final status. A failed or rolled-back scale-out adds one to the
service's consecutive failures, a succeeded one brings them back to 0 (autoscaling/safety.py says what an open
breaker holds; autoscaling/safety_services.py reads it and has the operators' doors).
"""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from autoscaling.models import CircuitBreaker
from autoscaling.safety_services import breaker_threshold
from events.models import ScaleOutEvent

Status = ScaleOutEvent.Status
FAILED_STATUSES = (Status.FAILED, Status.ROLLED_BACK)


# --- the breaker's count, as events finish -------------------------------------------------------------------
def breaker_event_finished(*, event_id, status):
    """A scale-out event reached final status `status`: count a failure (failed, rolled back) or close the breaker
    (succeeded). Other events and statuses (a scale-in, a cancelled scale-out) change nothing."""
    if status not in (*FAILED_STATUSES, Status.SUCCEEDED):
        return
    config_id = (
        ScaleOutEvent.objects.filter(pk=event_id, action=ScaleOutEvent.Action.SCALE_OUT)
        .values_list("config_id", flat=True)
        .first()
    )
    if config_id is None:
        return
    breakers = CircuitBreaker.objects.filter(config_id=config_id)
    if status == Status.SUCCEEDED:
        breakers.exclude(failures=0).update(failures=0, opened_at=None)
        return
    now = timezone.now()
    with transaction.atomic():
        CircuitBreaker.objects.get_or_create(config_id=config_id)
        breakers.update(failures=F("failures") + 1, last_failure_at=now, last_failed_event_id=event_id)
        threshold = breaker_threshold()
        if threshold:
            breakers.filter(failures__gte=threshold, opened_at__isnull=True).update(opened_at=now)
