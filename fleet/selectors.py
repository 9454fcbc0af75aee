"""Reads of the fleet: how many instances a service has, by what min, max and the decisions count."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q

from fleet.models import ManagedInstance

State = ManagedInstance.State


@dataclass(frozen=True)
class FleetCounts:
    in_service: int = 0
    creating: int = 0
    unhealthy: int = 0
    draining: int = 0
    # Scale-in: instances in service that a scale-in in progress already chose (they are leaving), those that may
    # still be chosen (not protected, not leaving), and when the newest the portal created came into service.
    leaving: int = 0
    removable: int = 0
    newest_in_service_at: datetime | None = None

    @property
    def counted(self):
        """What min and max count: in service plus being created."""
        return self.in_service + self.creating


def fleet_counts(*, config_ids):
    """{config id: FleetCounts} for the given configs, in one aggregate query (configs with no instance: zeros)."""
    rows = (
        ManagedInstance.objects.filter(config_id__in=list(config_ids))
        .values("config_id")
        .annotate(
            in_service=Count("pk", filter=Q(state=State.IN_SERVICE)),
            creating=Count("pk", filter=Q(state__in=ManagedInstance.CREATING_STATES)),
            unhealthy=Count(
                "pk", filter=Q(state__in=ManagedInstance.COUNTED_STATES, health=ManagedInstance.Health.UNHEALTHY)
            ),
            draining=Count("pk", filter=Q(state=State.DRAINING)),
            leaving=Count("pk", filter=Q(state=State.IN_SERVICE) & chosen_for_scale_in()),
            removable=Count(
                "pk", filter=Q(state=State.IN_SERVICE, protected_from_scale_in=False) & ~chosen_for_scale_in()
            ),
            newest_in_service_at=Max(
                "in_service_at", filter=Q(state=State.IN_SERVICE, origin=ManagedInstance.Origin.CREATED)
            ),
        )
    )
    counts = {config_id: FleetCounts() for config_id in config_ids}
    for row in rows:
        config_id = row.pop("config_id")
        counts[config_id] = FleetCounts(**row)
    return counts


def config_fleet_counts(*, config):
    return fleet_counts(config_ids=[config.pk])[config.pk]


def chosen_for_scale_in():
    """Chosen by a scale-in still in progress (a failed one gives its instances back)."""
    events = ManagedInstance._meta.get_field("removed_by_event").related_model  # the events app sits above
    return Q(removed_by_event__status__in=events.ACTIVE_STATUSES)


def in_service_instances(*, config_id):
    """The config's instances in service, each annotated `leaving` (chosen by a scale-in in progress)."""
    return (
        ManagedInstance.objects.filter(config_id=config_id, state=State.IN_SERVICE)
        .annotate(leaving=Count("pk", filter=chosen_for_scale_in()))
        .order_by("pk")
    )
