"""The audit trail: one entry per change and per operator action on every mutating door (API, admin, command),
with who, when, the door, and the fields before and after; written in the change's transaction; read-only."""

import datetime
import io

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from access import roles
from access.models import AuditEntry
from access.tests.helpers import role_user
from autoscaling.models import AutoscalingConfig, IpPool, ProvisioningRun
from events.models import ScaleOutEvent
from fleet import services as fleet_services
from fleet.models import ManagedInstance
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db
Door = AuditEntry.Door
Action = AuditEntry.Action
CLOSED = "http://127.0.0.1:9"


@pytest.fixture
def closed_systems(settings):
    settings.VCENTER_URL = f"{CLOSED}/sdk"
    settings.F5_URL = CLOSED
    settings.JENKINS_URL = CLOSED


@pytest.fixture
def template(db):
    return VMTemplate.objects.create(name="tpl-audit", status=VMTemplate.Status.READY)


@pytest.fixture
def pool(db):
    return IpPool.objects.create(
        name="pool-audit", network="127.91.0.0/24", first_address="127.91.0.10", last_address="127.91.0.30",
        gateway="127.91.0.1", ping_check=True,
    )  # fmt: skip


@pytest.fixture
def config(template, pool):
    return AutoscalingConfig.objects.create(
        service_name="web",
        template=template,
        ip_pool=pool,
        enabled=False,
        min_instances=1,
        max_instances=3,
        f5_pool="pool_web",  # an enabled config needs one: the tests enable it
    )


def token_client(user):
    """Token authentication: DRF finds the user after every middleware ran; the entry must still name it."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    return client


def entries_since(mark, **filters):
    return list(AuditEntry.objects.filter(pk__gt=mark, **filters).order_by("pk"))


def mark():
    last = AuditEntry.objects.order_by("-pk").first()
    return last.pk if last else 0


def one(entries):
    assert len(entries) == 1, [(e.content_type.model, e.action, e.operation, e.changes) for e in entries]
    return entries[0]


def of(model):
    return {"content_type": ContentType.objects.get_for_model(model)}


# --- the API door --------------------------------------------------------------------------------------------
def test_api_config_create_change_delete_one_entry_each_with_before_and_after(template, pool):
    user = role_user(roles.ADMINISTRATOR, username="alice")
    api = token_client(user)
    start = mark()
    body = {"service_name": "shop", "template": template.pk, "ip_pool": pool.pk, "threshold": 80}
    created = api.post("/api/autoscaling/configs", body, format="json")
    assert created.status_code == 201, created.json()
    entry = one(entries_since(start))
    assert (entry.action, entry.door, entry.actor, entry.remote_addr) == (Action.CREATE, Door.API, user, "127.0.0.1")
    assert entry.door_detail == "POST /api/autoscaling/configs"
    assert entry.changes["service_name"] == ["None", "shop"]

    start = mark()
    config_id = created.json()["id"]
    assert api.patch(f"/api/autoscaling/configs/{config_id}", {"threshold": 90}, format="json").status_code == 200
    entry = one(entries_since(start))
    assert entry.action == Action.UPDATE and entry.changes == {"threshold": ["80.0", "90.0"]}

    start = mark()
    assert api.delete(f"/api/autoscaling/configs/{config_id}").status_code == 204
    entry = one(entries_since(start))
    assert (entry.action, entry.object_repr, entry.actor) == (Action.DELETE, "shop", user)


def test_api_operator_actions_one_entry_each(config, template):
    user = role_user(roles.OPERATOR, username="olga")
    api = token_client(user)
    start = mark()
    assert api.post(f"/api/autoscaling/configs/{config.pk}/enable").status_code == 200
    entry = one(entries_since(start))
    assert (entry.operation, entry.changes, entry.actor, entry.door) == ("enable", {"enabled": ["False", "True"]},
                                                                         user, Door.API)  # fmt: skip
    start = mark()
    assert api.post(f"/api/autoscaling/configs/{config.pk}/disable").status_code == 200
    assert one(entries_since(start)).changes == {"enabled": ["True", "False"]}

    start = mark()
    assert api.post("/api/autoscaling/sync").status_code == 202
    entry = one(entries_since(start))
    assert (entry.action, entry.operation, entry.content_type.model) == (Action.OPERATION, "sync", "provisioningrun")
    assert entry.object_pk == str(ProvisioningRun.objects.get().pk)

    config.enabled = True
    config.save()
    start = mark()
    response = api.post("/api/autoscaling/events", {"service_name": "web", "reason": "load test"}, format="json")
    assert response.status_code == 201, response.json()
    entry = one(entries_since(start))
    event = ScaleOutEvent.objects.get()
    assert (entry.operation, entry.actor, entry.additional_data["event"]) == ("scale_out", user, event.pk)


def test_api_pool_and_template_changes_one_entry_each(template):
    api = token_client(role_user(roles.ADMINISTRATOR))
    body = {"name": "p2", "network": "127.92.0.0/24", "first_address": "127.92.0.10", "last_address": "127.92.0.20"}
    start = mark()
    pool_id = api.post("/api/autoscaling/ip-pools", body, format="json").json()["id"]
    assert one(entries_since(start)).action == Action.CREATE
    start = mark()
    api.patch(f"/api/autoscaling/ip-pools/{pool_id}", {"last_address": "127.92.0.25"}, format="json")
    assert one(entries_since(start)).changes == {"last_address": ["127.92.0.20", "127.92.0.25"]}
    start = mark()
    assert api.delete(f"/api/autoscaling/ip-pools/{pool_id}").status_code == 204
    assert one(entries_since(start)).action == Action.DELETE
    start = mark()
    assert api.delete(f"/api/templates/{template.pk}").status_code == 204
    entry = one(entries_since(start))
    assert (entry.action, entry.object_repr, entry.operation) == (Action.DELETE, "tpl-audit", "")


def test_a_refused_change_leaves_no_entry(config, template):
    """The entries are written in the change's transaction: a deletion refused half-way takes them back."""
    ManagedInstance.objects.create(config=config, state=ManagedInstance.State.IN_SERVICE, vm_name="web-1")
    ScaleOutEvent.objects.create(config=config, service_name="web", jenkins_job="j")
    api = token_client(role_user(roles.ADMINISTRATOR))
    start = mark()
    response = api.delete(f"/api/autoscaling/configs/{config.pk}")
    assert response.status_code == 409
    assert entries_since(start) == []
    assert ManagedInstance.objects.filter(config=config).exists()


def test_a_refused_request_writes_nothing():
    api = token_client(role_user(roles.VIEWER))
    start = mark()
    assert api.post("/api/autoscaling/sync").status_code == 403
    assert entries_since(start) == []


# --- the admin door ------------------------------------------------------------------------------------------
def test_admin_actions_and_forms_one_entry_each(config, pool, closed_systems):
    admin = role_user(roles.ADMINISTRATOR, username="adam")
    client = Client()
    client.force_login(admin)
    instance = ManagedInstance.objects.create(config=config, state=ManagedInstance.State.IN_SERVICE, vm_name="web-7")
    configs = "/admin/autoscaling/autoscalingconfig/"
    cases = [
        (configs, "enable_configs", config.pk, "enable", {"enabled": ["False", "True"]}),
        (configs, "disable_configs", config.pk, "disable", {"enabled": ["True", "False"]}),
        (configs, "sync_now", config.pk, "sync", None),
        (configs, "reconcile_fleet", config.pk, "reconcile", None),
        ("/admin/fleet/managedinstance/", "protect", instance.pk, "protect",
         {"protected_from_scale_in": ["False", "True"]}),
        ("/admin/fleet/managedinstance/", "unprotect", instance.pk, "unprotect",
         {"protected_from_scale_in": ["True", "False"]}),
    ]  # fmt: skip
    for url, action, pk, operation, changes in cases:
        start = mark()
        client.post(url, {"action": action, "_selected_action": [pk]})
        entry = one(entries_since(start))
        assert (entry.door, entry.actor, entry.operation) == (Door.ADMIN, admin, operation), action
        assert entry.door_detail == f"POST {url} action={action}"
        if changes is not None:
            assert entry.changes == changes, action

    start = mark()
    form = {
        "name": "pool-audit",
        "network": "127.91.0.0/24",
        "first_address": "127.91.0.10",
        "last_address": "127.91.0.40",
        "gateway": "127.91.0.1",
        "ping_check": "on",
        "dns_servers": "[]",
        "excluded_addresses": "[]",
        "description": "",
        "allocations-TOTAL_FORMS": "0",
        "allocations-INITIAL_FORMS": "0",
    }
    response = client.post(f"/admin/autoscaling/ippool/{pool.pk}/change/", form)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    entry = one(entries_since(start, **of(IpPool)))
    assert entry.changes == {"last_address": ["127.91.0.30", "127.91.0.40"]} and entry.door == Door.ADMIN


def test_removing_orphans_in_the_admin_is_an_operator_action(closed_systems):
    from fleet.models import Orphan

    now = timezone.now()
    orphan = Orphan.objects.create(kind=Orphan.Kind.VM, key="vm-5", name="left", first_seen_at=now, last_seen_at=now)
    admin = role_user(roles.ADMINISTRATOR, username="adam")
    client = Client()
    client.force_login(admin)
    start = mark()
    client.post("/admin/fleet/orphan/", {"action": "remove", "_selected_action": [orphan.pk]})
    entry = one(entries_since(start))
    assert (entry.operation, entry.door, entry.actor, entry.content_type.model) == ("orphans_remove", Door.ADMIN,
                                                                                    admin, "orphan")  # fmt: skip


def test_an_admin_deletion_is_one_entry(template):
    client = Client()
    client.force_login(role_user(roles.ADMINISTRATOR))
    start = mark()
    client.post(f"/admin/templates_app/vmtemplate/{template.pk}/delete/", {"post": "yes"})
    entry = one(entries_since(start))
    assert (entry.action, entry.door, entry.object_repr) == (Action.DELETE, Door.ADMIN, "tpl-audit")


# --- the command door and the system -------------------------------------------------------------------------
def test_a_command_is_its_own_door(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root-admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "pw-cmd-123456")
    start = mark()
    call_command("ensure_admin", stdout=io.StringIO())
    entry = one(entries_since(start))
    assert (entry.action, entry.door, entry.object_repr) == (Action.CREATE, Door.COMMAND, "root-admin")
    assert entry.door_detail.startswith("manage.py ensure_admin (OS user ")
    assert "password" not in entry.changes


def test_a_provisioning_pass_from_the_command_is_an_operator_action(settings):
    settings.MONITORING_SSH_PORT = 9  # nothing listens: the pass fails, and is recorded all the same
    start = mark()
    with pytest.raises(CommandError):
        call_command("sync_autoscaling", "--check", stdout=io.StringIO())
    entry = one(entries_since(start))
    assert (entry.operation, entry.door, entry.content_type.model) == ("check", Door.COMMAND, "provisioningrun")
    assert entry.door_detail.startswith("manage.py sync_autoscaling")


def test_a_reconcile_is_an_operator_action_from_a_command_not_from_the_schedule(config, closed_systems):
    start = mark()
    with pytest.raises(CommandError):  # vCenter is unreachable: the pass is recorded with its error
        call_command("fleet_reconcile", stdout=io.StringIO())
    entry = one(entries_since(start))
    assert (entry.operation, entry.door, entry.content_type.model) == ("reconcile", Door.COMMAND, "reconcilerun")
    assert entry.additional_data["ok"] is False

    from fleet import tasks

    start = mark()
    tasks.fleet_reconcile()
    assert entries_since(start) == []


def test_instance_state_changes_are_recorded_with_the_door_they_come_through(config):
    """Conditional UPDATEs send no model signal: fleet.services records each state change itself."""
    from access import audit

    instance = ManagedInstance.objects.create(config=config, vm_name="web-9")
    start = mark()
    with audit.door(Door.PIPELINE, detail="POST /api/events/1/callback/step"):
        fleet_services.instance_transition(instance_id=instance.pk, new="provisioning", reason="clone")
    entry = one(entries_since(start))
    assert (entry.door, entry.changes["state"]) == (Door.PIPELINE, ["pending", "provisioning"])
    start = mark()
    fleet_services.instances_health_set(changes=[(instance.pk, "unhealthy", "powered off")])
    entry = one(entries_since(start))
    assert (entry.door, entry.changes) == (Door.SYSTEM, {"health": ["unknown", "unhealthy"]})


def test_a_conversion_s_result_is_recorded(closed_systems):
    """The conversion task finishes a template with a conditional UPDATE: templates_app.services records it."""
    from templates_app import services as template_services

    template = VMTemplate.objects.create(name="tpl-conv", status=VMTemplate.Status.CONVERTING, source_vm_moid="vm-9")
    start = mark()
    template_services.template_convert(template_id=template.pk)  # vCenter unreachable: failed
    entry = one(entries_since(start))
    assert (entry.door, entry.action, entry.changes["status"]) == (Door.SYSTEM, Action.UPDATE, ["converting", "failed"])
    assert entry.changes["last_error"][0] == "" and entry.changes["last_error"][1]


def test_joining_a_group_is_recorded(client):
    user = role_user(roles.VIEWER, username="vera")
    start = mark()
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name=roles.OPERATOR))
    entry = one(entries_since(start))
    assert entry.changes["groups"]["operation"] == "add" and entry.changes["groups"]["objects"] == ["operator"]


# --- reading the trail ---------------------------------------------------------------------------------------
def test_the_api_lists_and_filters_the_trail(config):
    operator = role_user(roles.OPERATOR, username="olga")
    token_client(operator).post(f"/api/autoscaling/configs/{config.pk}/enable")
    admin_client = Client()
    admin_client.force_login(role_user(roles.ADMINISTRATOR, username="adam"))
    admin_client.post("/admin/autoscaling/autoscalingconfig/", {"action": "disable_configs",
                                                               "_selected_action": [config.pk]})  # fmt: skip
    api = token_client(role_user(roles.VIEWER, username="vic"))
    everything = api.get("/api/audit/entries").json()
    assert everything["count"] == AuditEntry.objects.count()
    by_door = api.get("/api/audit/entries", {"door": "admin", "model": "autoscaling.autoscalingconfig"}).json()
    assert [(e["operation"], e["actor"], e["changes"]) for e in by_door["results"]] == [
        ("disable", "adam", {"enabled": ["True", "False"]})
    ]
    by_actor = api.get("/api/audit/entries", {"actor": "olga"}).json()["results"]
    assert [(e["door"], e["operation"], e["action"], e["model"]) for e in by_actor] == [
        ("api", "enable", "update", "autoscaling.autoscalingconfig")
    ]
    detail = api.get(f"/api/audit/entries/{by_actor[0]['id']}").json()
    assert detail["door_detail"] == f"POST /api/autoscaling/configs/{config.pk}/enable"
    assert api.get("/api/audit/entries", {"door": "nowhere"}).status_code == 400


def test_the_admin_shows_the_trail_and_refuses_every_edit(config, admin_user):
    config.description = "changed"
    config.save()
    entry = AuditEntry.objects.get(**of(AutoscalingConfig), action=Action.UPDATE)
    for user in (role_user(roles.ADMINISTRATOR), admin_user):
        client = Client()
        client.force_login(user)
        assert client.get("/admin/access/auditentry/").status_code == 200
        assert client.get(f"/admin/access/auditentry/{entry.pk}/change/").status_code == 200
        client.post(f"/admin/access/auditentry/{entry.pk}/change/", {"object_repr": "forged"})
        assert client.post(f"/admin/access/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.get("/admin/access/auditentry/add/").status_code == 403
    kept = AuditEntry.objects.filter(**of(AutoscalingConfig), action=Action.UPDATE)
    assert list(kept.values_list("pk", "object_repr", "changes")) == [(entry.pk, "web", entry.changes)]


# --- retention -----------------------------------------------------------------------------------------------
def test_prune_deletes_only_the_entries_past_the_retention(config, settings):
    old = AuditEntry.objects.create(content_type_id=1, object_pk="1", object_repr="old", action=1)
    AuditEntry.objects.filter(pk=old.pk).update(timestamp=timezone.now() - datetime.timedelta(days=40))
    recent = AuditEntry.objects.create(content_type_id=1, object_pk="1", object_repr="recent", action=1)
    settings.AUDIT_RETENTION_DAYS = 0
    call_command("prune_audit_trail", stdout=io.StringIO())
    assert AuditEntry.objects.filter(pk=old.pk).exists()
    settings.AUDIT_RETENTION_DAYS = 30
    from access import tasks

    assert tasks.audit_prune() == 1
    assert list(AuditEntry.objects.filter(pk__in=[old.pk, recent.pk]).values_list("object_repr", flat=True)) == [
        "recent"
    ]
    with pytest.raises(CommandError):
        call_command("prune_audit_trail", "--days=-1")


def test_the_prune_schedule_exists():
    from django_q.models import Schedule

    assert Schedule.objects.get(func="access.tasks.audit_prune").schedule_type == Schedule.DAILY
