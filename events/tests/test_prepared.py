"""common.prepared: a query compiled once returns, for any values, exactly what the ORM's .values() returns."""

from datetime import timedelta

import pytest
from django.db.models import Count, Max, Q
from django.utils import timezone

from common.prepared import PreparedQuery
from events.models import ScaleOutEvent

pytestmark = pytest.mark.django_db


def _events(config_id, since, status):
    return (
        ScaleOutEvent.objects.filter(config_id=config_id, created_at__gte=since)
        .exclude(status=status)
        .values("config_id")
        .annotate(count=Count("pk"), newest=Max("created_at"), manual=Count("pk", filter=Q(source="manual")))
    )


def test_the_same_rows_as_the_orm_for_every_value(make_config):
    configs = [make_config(f"web-{n}") for n in range(2)]
    now = timezone.now()
    for n, (config, created) in enumerate([(configs[0], 5), (configs[0], 50), (configs[1], 5), (configs[1], 500)]):
        event = ScaleOutEvent.objects.create(
            config=config, service_name=config.service_name, status="succeeded" if n % 2 else "failed"
        )
        ScaleOutEvent.objects.filter(pk=event.pk).update(created_at=now - timedelta(seconds=created))
    prepared = PreparedQuery(_events, config_id="int", since="datetime", status="text")
    cases = [
        (config.pk, now - timedelta(seconds=age), status)
        for config in configs
        for age in (1, 10, 100, 1000)
        for status in ("failed", "succeeded", "running")
    ]
    for config_id, since, status in cases:
        expected = list(_events(config_id, since, status))
        assert prepared.rows(config_id=config_id, since=since, status=status) == expected, (config_id, since, status)
    assert any(prepared.rows(config_id=pk, since=since, status=status) for pk, since, status in cases)
    assert prepared.first(config_id=-1, since=now, status="failed") is None


def test_a_value_that_is_not_a_parameter_is_refused_at_the_first_run():
    prepared = PreparedQuery(lambda config_id, name: ScaleOutEvent.objects.filter(pk=config_id).values("pk"),
                             config_id="int", name="text")  # fmt: skip
    with pytest.raises(ValueError, match="'name' is not a parameter"):
        prepared.rows(config_id=1, name="x")
