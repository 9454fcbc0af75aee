"""A template is converted by one process at a time: the queued task and the demo's direct call never both clone."""

import pytest
from django.core.cache import cache

from templates_app import services
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db


def test_a_conversion_under_way_elsewhere_is_left_to_it_and_waited_for(monkeypatch):
    template = VMTemplate.objects.create(name="once", status=VMTemplate.Status.CONVERTING, method="clone")
    calls = []
    monkeypatch.setattr(services, "vcenter_client", lambda: calls.append("vcenter") or pytest.fail("cloned twice"))
    lock = f"{services.CONVERT_LOCK}{template.pk}"
    assert cache.add(lock, "another process", 60)
    try:
        assert services.template_convert(template_id=template.pk).status == VMTemplate.Status.CONVERTING
        assert calls == []
        assert services.template_wait(template_id=template.pk, timeout=0.5).status == VMTemplate.Status.CONVERTING
        # The other process records its result; the waiter sees it.
        VMTemplate.objects.filter(pk=template.pk).update(status=VMTemplate.Status.READY)
        assert services.template_wait(template_id=template.pk, timeout=5).status == VMTemplate.Status.READY
        assert services.template_convert(template_id=template.pk).status == VMTemplate.Status.READY
        assert calls == []
    finally:
        cache.delete(lock)
