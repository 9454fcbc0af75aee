"""Reads of the fleet: how many instances a service has, by what min, max and the decisions count."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q

from common.prepared import PreparedQuery
from fleet.models import InstanceChange, ManagedInstance

State = ManagedInstance.State
# A failed instance's VM may be left (a failed clone, a removal that failed); a draining or removing one is there
# until its scale-in destroys it.
HELD_STATES = (State.FAILED, State.DRAINING, State.REMOVING)


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
    # VMs that may still exist but neither serve nor are being created (failed, draining, being removed): max
    # counts them (autoscaling.policy.Fleet.held).
    held: int = 0

    @property
    def counted(self):
        """What min and max count: in service plus being created."""
        return self.in_service + self.creating


def fleet_counts(*, config_ids):
    """{config id: FleetCounts} for the given configs, in one aggregate query (configs with no instance: zeros)."""
    counts = {config_id: FleetCounts() for config_id in config_ids}
    for row in _counts_query(ManagedInstance.objects.filter(config_id__in=list(config_ids))):
        config_id = row.pop("config_id")
        counts[config_id] = FleetCounts(**row)
    return counts


def _counts_query(instances):
    return instances.values("config_id").annotate(
        in_service=Count("pk", filter=Q(state=State.IN_SERVICE)),
        creating=Count("pk", filter=Q(state__in=ManagedInstance.CREATING_STATES)),
        unhealthy=Count(
            "pk", filter=Q(state__in=ManagedInstance.COUNTED_STATES, health=ManagedInstance.Health.UNHEALTHY)
        ),
        draining=Count("pk", filter=Q(state=State.DRAINING)),
        leaving=Count("pk", filter=Q(state=State.IN_SERVICE) & chosen_for_scale_in()),
        removable=Count("pk", filter=Q(state=State.IN_SERVICE, protected_from_scale_in=False) & ~chosen_for_scale_in()),
        held=Count("pk", filter=Q(state__in=HELD_STATES)),
        newest_in_service_at=Max(
            "in_service_at", filter=Q(state=State.IN_SERVICE, origin=ManagedInstance.Origin.CREATED)
        ),
    )


# One config's counts (every decision reads them): compiled once (common.prepared).
_CONFIG_COUNTS = PreparedQuery(
    lambda config_id: _counts_query(ManagedInstance.objects.filter(config_id=config_id)), config_id="int"
)


def config_fleet_counts(*, config):
    row = _CONFIG_COUNTS.first(config_id=config.pk)
    if row is None:
        return FleetCounts()
    row.pop("config_id")
    return FleetCounts(**row)


def fleet_size_points(*, changes, start, end):
    """The number of instances in service over [start, end], as a step series [(unix ts, count)].

    `changes` are the inventory's state changes, (unix ts, from state, to state), in time order; those before
    `start` give the count the series starts with. Pure: the history in, the points out.
    """
    count = 0
    points = []
    for ts, from_state, to_state in changes:
        delta = (to_state == State.IN_SERVICE) - (from_state == State.IN_SERVICE)
        if not delta:
            continue
        if ts > end:
            break
        if ts > start and not points:
            points.append((start, count))
        count += delta
        if ts > start:
            points.append((ts, count))
    if not points:
        points.append((start, count))
    points.append((end, count))
    return points


def fleet_size_points_by_config(*, config_ids, start, end):
    """{config id: fleet_size_points} of several services over [start, end] (unix seconds), in one query."""
    changes = {config_id: [] for config_id in config_ids}
    rows = (
        InstanceChange.objects.filter(instance__config_id__in=list(config_ids))
        .exclude(to_state="")
        .order_by("at", "pk")
        .values_list("instance__config_id", "at", "from_state", "to_state")
    )
    for config_id, at, old, new in rows:
        changes[config_id].append((at.timestamp(), old, new))
    return {
        config_id: fleet_size_points(changes=history, start=start, end=end) for config_id, history in changes.items()
    }


def config_fleet_size_points(*, config, start, end):
    """How many instances of the service were in service over [start, end] (unix seconds), from its history."""
    return fleet_size_points_by_config(config_ids=[config.pk], start=start, end=end)[config.pk]


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
