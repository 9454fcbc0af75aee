"""The instance lifecycle: one table, one writer, a history line per change; the counts min and max use."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from autoscaling.models import AutoscalingConfig
from fleet import selectors, services
from fleet.models import InstanceChange, ManagedInstance
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db
State = ManagedInstance.State


@pytest.fixture
def config():
    template = VMTemplate.objects.create(name="web-template", source_vm_name="web-0", status=VMTemplate.Status.READY)
    return AutoscalingConfig.objects.create(
        service_name="web", template=template, min_instances=1, max_instances=4, enabled=False
    )


ILLEGAL = [
    (current, new)
    for current, new in itertools.product(State.values, State.values)
    if current != new and new not in services.INSTANCE_TRANSITIONS[current]
]


@pytest.mark.parametrize(("current", "new"), ILLEGAL)
def test_every_illegal_transition_is_refused_and_leaves_no_history(config, current, new):
    instance = ManagedInstance.objects.create(config=config, state=current, vm_name="web-001")
    assert services.instance_transition(instance_id=instance.pk, new=new, reason="test") is None
    instance.refresh_from_db()
    assert instance.state == current
    assert not InstanceChange.objects.filter(instance=instance).exists()


def test_a_legal_transition_is_written_with_its_reason_and_times(config):
    instance = ManagedInstance.objects.create(config=config, vm_name="web-001")
    services.instance_transition(
        instance_id=instance.pk, new=State.PROVISIONING, reason="clone started", actor="pipeline"
    )
    done = services.instance_transition(
        instance_id=instance.pk, new=State.IN_SERVICE, reason="member up", actor="pipeline"
    )
    assert done.state == State.IN_SERVICE and done.in_service_at is not None
    history = list(instance.history.values_list("from_state", "to_state", "reason", "actor"))
    assert history == [
        (State.PENDING, State.PROVISIONING, "clone started", "pipeline"),
        (State.PROVISIONING, State.IN_SERVICE, "member up", "pipeline"),
    ]


def test_a_health_change_is_recorded_once(config):
    instance = ManagedInstance.objects.create(config=config, state=State.IN_SERVICE, vm_name="web-001")
    unhealthy = ManagedInstance.Health.UNHEALTHY
    assert services.instance_health_set(
        instance_id=instance.pk, health=unhealthy, reason="powered off", power_state="poweredOff"
    )
    assert not services.instance_health_set(instance_id=instance.pk, health=unhealthy, reason="still off")
    instance.refresh_from_db()
    assert instance.power_state == "poweredOff" and instance.unhealthy_since is not None
    assert list(instance.history.values_list("health", "reason")) == [(unhealthy, "powered off")]


def test_counts_are_in_service_plus_being_created_in_one_query(config, django_assert_num_queries):
    for state in (State.PENDING, State.PROVISIONING, State.IN_SERVICE, State.IN_SERVICE, State.REMOVED, State.LOST):
        ManagedInstance.objects.create(config=config, state=state)
    with django_assert_num_queries(1):
        counts = selectors.fleet_counts(config_ids=[config.pk, config.pk + 1000])
    assert counts[config.pk] == selectors.FleetCounts(in_service=2, creating=2, unhealthy=0, draining=0, removable=2)
    assert counts[config.pk].counted == 4
    assert counts[config.pk + 1000].counted == 0


def test_counts_tell_the_instances_a_scale_in_in_progress_removes_and_the_protected_ones(config):
    from events.models import ScaleOutEvent

    scale_in = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, action="scale_in")
    failed = ScaleOutEvent.objects.create(
        config=config, service_name=config.service_name, action="scale_in", status=ScaleOutEvent.Status.FAILED
    )
    now = timezone.now()
    ManagedInstance.objects.create(config=config, state=State.IN_SERVICE, removed_by_event=scale_in)
    ManagedInstance.objects.create(config=config, state=State.IN_SERVICE, removed_by_event=failed, in_service_at=now)
    ManagedInstance.objects.create(config=config, state=State.IN_SERVICE, protected_from_scale_in=True)
    ManagedInstance.objects.create(
        config=config, state=State.IN_SERVICE, origin=ManagedInstance.Origin.ADOPTED, in_service_at=now + timedelta(1)
    )
    counts = selectors.config_fleet_counts(config=config)
    assert (counts.in_service, counts.leaving, counts.removable) == (4, 1, 2)
    # Warm-up reads the newest VM the portal created, not an adopted one.
    assert counts.newest_in_service_at == now


def test_many_health_changes_are_written_in_a_constant_number_of_queries(config, django_assert_max_num_queries):
    unhealthy = ManagedInstance.Health.UNHEALTHY
    rows = [ManagedInstance.objects.create(config=config, state=State.IN_SERVICE) for _ in range(30)]
    ManagedInstance.objects.filter(pk=rows[0].pk).update(health=unhealthy)
    with django_assert_max_num_queries(6):
        changed = services.instances_health_set(
            changes=[(row.pk, unhealthy, f"powered off {row.pk}") for row in rows], actor="reconcile"
        )
    assert sorted(changed) == sorted(row.pk for row in rows[1:])
    last = ManagedInstance.objects.get(pk=rows[-1].pk)
    assert last.health == unhealthy and last.health_reason == f"powered off {last.pk}" and last.unhealthy_since
    assert list(last.history.values_list("health", "reason", "actor")) == [
        (unhealthy, f"powered off {last.pk}", "reconcile")
    ]
    assert not ManagedInstance.objects.get(pk=rows[0].pk).history.exists()
    assert services.instances_health_set(changes=[(last.pk, unhealthy, "again")]) == []
