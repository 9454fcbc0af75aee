"""Reads of the fleet: how many instances a service has, by what min, max and the decisions count."""

from dataclasses import dataclass

from django.db.models import Count, Q

from fleet.models import ManagedInstance

State = ManagedInstance.State


@dataclass(frozen=True)
class FleetCounts:
    in_service: int = 0
    creating: int = 0
    unhealthy: int = 0
    draining: int = 0

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
        )
    )
    counts = {config_id: FleetCounts() for config_id in config_ids}
    for row in rows:
        config_id = row.pop("config_id")
        counts[config_id] = FleetCounts(**row)
    return counts


def config_fleet_counts(*, config):
    return fleet_counts(config_ids=[config.pk])[config.pk]
