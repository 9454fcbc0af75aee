"""The autoscaling admin: actions need the permissions they declare, and a refused deletion is reported as refused."""

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProvisioningRun
from events.models import ScaleOutEvent
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db

CONFIGS = "/admin/autoscaling/autoscalingconfig/"
POOLS = "/admin/autoscaling/ippool/"


def staff(client, username, *codenames):
    user = get_user_model().objects.create(username=username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def action_choices(client, url):
    response = client.get(url)
    assert response.status_code == 200
    form = response.context.get("action_form")
    return [] if form is None else [value for value, _label in form.fields["action"].choices if value]


def messages_of(response):
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def test_a_view_only_user_neither_sees_nor_runs_the_actions(
    client, make_config, pool, django_capture_on_commit_callbacks
):
    config = make_config(ip_pool=pool)
    assert config.enabled
    staff(client, "viewer", "view_autoscalingconfig", "view_ippool", "view_ipallocation", "view_provisioningrun")
    assert action_choices(client, CONFIGS) == []
    assert action_choices(client, POOLS) == []

    for action in ("disable_configs", "enable_configs", "sync_now", "reconcile_fleet", "delete_selected"):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = client.post(CONFIGS, {"action": action, "_selected_action": [config.pk], "post": "yes"})
        assert response.status_code in (200, 302, 403)
        assert not queued
    config.refresh_from_db()
    assert config.enabled and AutoscalingConfig.objects.count() == 1
    assert not ProvisioningRun.objects.exists()
    client.post(POOLS, {"action": "delete_selected", "_selected_action": [pool.pk], "post": "yes"})
    assert IpPool.objects.filter(pk=pool.pk).exists()
    assert client.post(f"{POOLS}{pool.pk}/delete/", {"post": "yes"}).status_code == 403
    assert IpPool.objects.filter(pk=pool.pk).exists()
    assert not LogEntry.objects.exists()


def test_actions_follow_the_permissions_they_declare(client, make_config):
    config = make_config()
    # Changing configs is not running the operator actions: each has its own permission (access/roles.py).
    staff(client, "editor", "view_autoscalingconfig", "change_autoscalingconfig", "view_ippool")
    assert action_choices(client, CONFIGS) == []
    staff(
        client,
        "operator",
        "view_autoscalingconfig",
        "enable_autoscalingconfig",
        "request_provisioningrun",
        "reconcile_autoscalingconfig",
        "view_ippool",
    )
    assert action_choices(client, CONFIGS) == ["enable_configs", "disable_configs", "sync_now", "reconcile_fleet"]
    assert action_choices(client, POOLS) == []
    client.post(CONFIGS, {"action": "disable_configs", "_selected_action": [config.pk]})
    config.refresh_from_db()
    assert not config.enabled
    client.post(CONFIGS, {"action": "sync_now", "_selected_action": [config.pk]})
    assert ProvisioningRun.objects.get().full_check


def test_superuser_sees_every_action(admin_client):
    assert action_choices(admin_client, CONFIGS) == [
        "delete_selected",
        "enable_configs",
        "disable_configs",
        "sync_now",
        "reconcile_fleet",
        "suspend_processes",
        "resume_processes",
        "resume_breaker",
    ]
    assert action_choices(admin_client, POOLS) == ["delete_selected"]


def test_a_view_only_user_cannot_run_template_or_event_actions(client):
    template = VMTemplate.objects.create(name="tpl-view", status=VMTemplate.Status.FAILED)
    staff(client, "viewer", "view_vmtemplate", "view_scaleoutevent", "view_alertnotification", "view_scalingdecision")
    assert action_choices(client, "/admin/templates_app/vmtemplate/") == []
    for url in ("/admin/events/scaleoutevent/", "/admin/events/alertnotification/", "/admin/events/scalingdecision/"):
        assert action_choices(client, url) == []
    client.post(
        "/admin/templates_app/vmtemplate/",
        {"action": "delete_templates", "_selected_action": [template.pk], "confirmed": "yes"},
    )
    assert client.post(f"/admin/templates_app/vmtemplate/{template.pk}/delete/", {"post": "yes"}).status_code == 403
    assert VMTemplate.objects.filter(pk=template.pk).exists()


def _busy_pool(name):
    pool = IpPool.objects.create(
        name=name, network="127.66.0.0/24", first_address="127.66.0.10", last_address="127.66.0.20"
    )
    IpAllocation.objects.create(pool=pool, address="127.66.0.10", state=IpAllocation.State.IN_USE)
    return pool


def test_deleting_a_pool_with_active_allocations_is_refused_and_not_logged(admin_client):
    pool = _busy_pool("busy")
    response = admin_client.post(f"{POOLS}{pool.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == f"{POOLS}{pool.pk}/change/"
    notes = messages_of(response)
    assert notes == [("error", "The IP pool busy still has 1 addresses reserved or in use.")]
    assert IpPool.objects.filter(pk=pool.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()

    IpAllocation.objects.update(state=IpAllocation.State.RELEASED)
    response = admin_client.post(f"{POOLS}{pool.pk}/delete/", {"post": "yes"}, follow=True)
    assert [level for level, _text in messages_of(response)] == ["success"]
    assert not IpPool.objects.filter(pk=pool.pk).exists()
    assert LogEntry.objects.get(action_flag=DELETION).object_repr == "busy"


def test_the_bulk_delete_deletes_what_it_may_and_reports_the_refusals(admin_client):
    busy = _busy_pool("busy")
    idle = IpPool.objects.create(
        name="idle", network="127.66.1.0/24", first_address="127.66.1.10", last_address="127.66.1.20"
    )
    selection = {"action": "delete_selected", "_selected_action": [busy.pk, idle.pk]}
    confirm = admin_client.post(POOLS, selection)
    assert confirm.status_code == 200 and b"Are you sure" in confirm.content
    assert IpPool.objects.count() == 2

    response = admin_client.post(POOLS, {**selection, "post": "yes"}, follow=True)
    assert sorted(messages_of(response)) == [
        ("error", "The IP pool busy still has 1 addresses reserved or in use."),
        ("success", "Successfully deleted 1 IP pool."),
    ]
    assert list(IpPool.objects.values_list("name", flat=True)) == ["busy"]
    assert list(LogEntry.objects.filter(action_flag=DELETION).values_list("object_repr", flat=True)) == ["idle"]


def test_deleting_a_config_with_events_is_refused_and_not_logged(admin_client, make_config):
    config = make_config()
    ScaleOutEvent.objects.create(config=config)
    response = admin_client.post(f"{CONFIGS}{config.pk}/delete/", {"post": "yes"}, follow=True)
    assert AutoscalingConfig.objects.filter(pk=config.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
    assert not any("deleted successfully" in text for _level, text in messages_of(response))


def test_config_list_rule_shows_the_scale_in_side_when_the_config_has_one(db):
    from django.contrib import admin as django_admin

    from autoscaling.models import AutoscalingConfig

    model_admin = django_admin.site._registry[AutoscalingConfig]
    config = AutoscalingConfig(service_name="web", metric="cpu", threshold=70.0)
    assert model_admin.scaling_rule(config) == "scale out: CPU usage > 70%"
    config.scale_in_threshold = 25.5  # the field scale-in adds
    assert model_admin.scaling_rule(config) == "scale out: CPU usage > 70%; scale in: < 25.5%"
