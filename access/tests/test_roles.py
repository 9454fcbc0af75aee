"""Each role on each door: every API operation and every admin action, for anonymous, a non-staff user (in the
administrator group, even), viewer, operator and administrator. A refused request changes nothing (forged admin
POSTs included); an allowed one is not refused. The groups come from the migration and the post_migrate sync."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from access import roles
from access.models import AuditEntry
from access.roles import ROLES
from access.tests.helpers import role_user
from autoscaling.models import AutoscalingConfig, CircuitBreaker, IpPool, ProcessSuspension, ProvisioningRun
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance, Orphan
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db

RANK = {"anonymous": -2, "nonstaff": -1, roles.VIEWER: 0, roles.OPERATOR: 1, roles.ADMINISTRATOR: 2}
IDENTITIES = list(RANK)
CLOSED = "http://127.0.0.1:9"  # nothing listens: vCenter, Jenkins, Prometheus answer "unreachable" at once


@pytest.fixture
def world(settings):
    """One of everything, and the external systems pointed at a closed loopback port."""
    settings.VCENTER_URL = f"{CLOSED}/sdk"
    settings.JENKINS_URL = CLOSED
    settings.PROMETHEUS_URL = CLOSED
    settings.ALERTMANAGER_URL = CLOSED
    settings.F5_URL = CLOSED
    template = VMTemplate.objects.create(name="tpl-used", status=VMTemplate.Status.READY)
    spare = VMTemplate.objects.create(name="tpl-spare", status=VMTemplate.Status.READY, vcenter_moid="vm-1")
    pool = IpPool.objects.create(
        name="pool-used", network="127.88.0.0/24", first_address="127.88.0.10", last_address="127.88.0.30"
    )
    free_pool = IpPool.objects.create(
        name="pool-free", network="127.89.0.0/24", first_address="127.89.0.10", last_address="127.89.0.30"
    )
    config = AutoscalingConfig.objects.create(
        service_name="web",
        template=template,
        ip_pool=pool,
        enabled=True,
        min_instances=1,
        max_instances=4,
        f5_pool="pool_web",
    )
    spare_config = AutoscalingConfig.objects.create(service_name="spare", template=template, enabled=False)
    instance = ManagedInstance.objects.create(config=config, state=ManagedInstance.State.IN_SERVICE, vm_name="web-1")
    event = ScaleOutEvent.objects.create(config=config, service_name="web", jenkins_job="vmautoscale-web")
    notification = AlertNotification.objects.create(service_name="web", payload={}, status="firing")
    decision = ScalingDecision.objects.create(service_name="web", config=config, outcome="cooldown", reason="r")
    run = ProvisioningRun.objects.create(reason="test", status=ProvisioningRun.Status.CHANGED)
    entry = AuditEntry.objects.create(content_type_id=1, object_pk="1", object_repr="x", action=0)
    now = timezone.now()
    orphan = Orphan.objects.create(kind=Orphan.Kind.VM, key="vm-77", name="left-behind", first_seen_at=now,
                                   last_seen_at=now)  # fmt: skip
    return {
        "orphan": orphan.pk,
        "template": template.pk,
        "spare": spare.pk,
        "pool": pool.pk,
        "free_pool": free_pool.pk,
        "config": config.pk,
        "spare_config": spare_config.pk,
        "instance": instance.pk,
        "event": event.pk,
        "notification": notification.pk,
        "decision": decision.pk,
        "run": run.pk,
        "entry": entry.pk,
    }


def identity_client(identity, *, api=True):
    client = APIClient() if api else Client()
    if identity == "anonymous":
        return client, None
    if identity == "nonstaff":
        user = role_user(roles.ADMINISTRATOR, username="outsider")
        user.is_staff = False
        user.save()
    else:
        user = role_user(identity)
    client.force_login(user)
    return client, user


POOL_BODY = {"name": "pool-new", "network": "127.90.0.0/24", "first_address": "127.90.0.10",
             "last_address": "127.90.0.20"}  # fmt: skip

# (method, path, body, the lowest role that may): every operation of the API's schema but the webhook's and the
# pipeline callbacks' (their own tokens; tests/test_api_errors.py and events/tests cover them).
API_OPERATIONS = [
    ("get", "/api/templates", None, roles.VIEWER),
    ("get", "/api/templates/{template}", None, roles.VIEWER),
    ("get", "/api/templates/vms", None, roles.VIEWER),
    ("post", "/api/templates", {"source_vm": "DC0_H0_VM0", "name": "t-new"}, roles.ADMINISTRATOR),
    ("delete", "/api/templates/{spare}", None, roles.ADMINISTRATOR),
    ("delete", "/api/templates/{spare}?delete_in_vcenter=true", None, roles.ADMINISTRATOR),
    ("get", "/api/autoscaling/configs", None, roles.VIEWER),
    ("get", "/api/autoscaling/configs/{config}", None, roles.VIEWER),
    ("get", "/api/autoscaling/configs/{config}/preview", None, roles.VIEWER),
    ("get", "/api/autoscaling/configs/{config}/replay?period=1h", None, roles.VIEWER),
    ("post", "/api/autoscaling/configs/{config}/replay", {"period": "1h", "policy": {"threshold": 60}}, roles.VIEWER),
    ("post", "/api/autoscaling/configs", {"service_name": "new", "template": "{template}"}, roles.ADMINISTRATOR),
    ("put", "/api/autoscaling/configs/{config}", {"service_name": "web", "template": "{template}"},
     roles.ADMINISTRATOR),
    ("patch", "/api/autoscaling/configs/{config}", {"description": "changed"}, roles.ADMINISTRATOR),
    ("delete", "/api/autoscaling/configs/{spare_config}", None, roles.ADMINISTRATOR),
    ("post", "/api/autoscaling/configs/{config}/disable", None, roles.OPERATOR),
    ("post", "/api/autoscaling/configs/{spare_config}/enable", None, roles.OPERATOR),
    ("post", "/api/autoscaling/configs/{config}/suspend", {"processes": ["scale_out"]}, roles.OPERATOR),
    ("post", "/api/autoscaling/configs/{config}/resume", {}, roles.OPERATOR),
    ("post", "/api/autoscaling/configs/{config}/resume-breaker", None, roles.OPERATOR),
    ("post", "/api/autoscaling/sync", None, roles.OPERATOR),
    ("get", "/api/autoscaling/provisioning-runs", None, roles.VIEWER),
    ("get", "/api/autoscaling/provisioning-runs/{run}", None, roles.VIEWER),
    ("get", "/api/autoscaling/ip-pools", None, roles.VIEWER),
    ("get", "/api/autoscaling/ip-pools/{pool}", None, roles.VIEWER),
    ("get", "/api/autoscaling/ip-pools/{pool}/allocations", None, roles.VIEWER),
    ("post", "/api/autoscaling/ip-pools", POOL_BODY, roles.ADMINISTRATOR),
    ("put", "/api/autoscaling/ip-pools/{free_pool}", {**POOL_BODY, "name": "pool-free"}, roles.ADMINISTRATOR),
    ("patch", "/api/autoscaling/ip-pools/{free_pool}", {"description": "changed"}, roles.ADMINISTRATOR),
    ("delete", "/api/autoscaling/ip-pools/{free_pool}", None, roles.ADMINISTRATOR),
    ("get", "/api/autoscaling/instances", None, roles.VIEWER),
    ("get", "/api/autoscaling/instances/{instance}", None, roles.VIEWER),
    ("post", "/api/autoscaling/instances/{instance}/protect", None, roles.OPERATOR),
    ("post", "/api/autoscaling/instances/{instance}/unprotect", None, roles.OPERATOR),
    ("post", "/api/autoscaling/instances/{instance}/remove", {}, roles.OPERATOR),
    ("get", "/api/autoscaling/events", None, roles.VIEWER),
    ("post", "/api/autoscaling/events", {"service_name": "web"}, roles.OPERATOR),
    ("get", "/api/autoscaling/events/{event}", None, roles.VIEWER),
    ("get", "/api/autoscaling/notifications", None, roles.VIEWER),
    ("get", "/api/autoscaling/notifications/{notification}", None, roles.VIEWER),
    ("get", "/api/autoscaling/decisions", None, roles.VIEWER),
    ("get", "/api/jenkins/jobs/vmautoscale-web/builds", None, roles.VIEWER),
    ("get", "/api/jenkins/jobs/vmautoscale-web/builds/1", None, roles.VIEWER),
    ("get", "/api/jenkins/jobs/vmautoscale-web/builds/1/log", None, roles.VIEWER),
    ("get", "/api/monitoring/services/web/metrics", None, roles.VIEWER),
    ("get", "/api/monitoring/alerts", None, roles.VIEWER),
    ("get", "/api/audit/entries", None, roles.VIEWER),
    ("get", "/api/audit/entries/{entry}", None, roles.VIEWER),
]  # fmt: skip


def _fill(text, world):
    return text.format(**world) if isinstance(text, str) else text


def _state():
    """What a refused request must leave as it is."""
    return {
        "audit": AuditEntry.objects.count(),
        "templates": sorted(VMTemplate.objects.values_list("name", "status")),
        "configs": sorted(AutoscalingConfig.objects.values_list("service_name", "enabled", "description")),
        "pools": sorted(IpPool.objects.values_list("name", "description")),
        "runs": ProvisioningRun.objects.count(),
        "events": ScaleOutEvent.objects.count(),
        "decisions": ScalingDecision.objects.count(),
        "protected": sorted(ManagedInstance.objects.values_list("pk", "protected_from_scale_in")),
        "orphans": sorted(Orphan.objects.values_list("pk", "state")),
        "suspensions": sorted(ProcessSuspension.objects.values_list("config_id", "process")),
        "breakers": sorted(CircuitBreaker.objects.values_list("config_id", "failures", "reset_at")),
    }


def test_every_api_operation_of_the_schema_is_in_the_matrix():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    listed = {(method, path.split("?")[0]) for method, path, _body, _role in API_OPERATIONS}
    own_tokens = ("/api/webhook/", "/api/events/{event_id}/callback/")
    for path, operations in schema["paths"].items():
        if path.startswith(own_tokens):
            continue
        for method in operations:
            normalised = path
            for name in ("id", "job_name", "number", "service"):
                normalised = normalised.replace("{" + name + "}", "*")
            assert any(m == method and _same_path(p, normalised) for m, p in listed), (
                f"{method.upper()} {path} is not in the role matrix"
            )


def _same_path(listed, normalised):
    parts, wanted = listed.strip("/").split("/"), normalised.strip("/").split("/")
    return len(parts) == len(wanted) and all(w == "*" or w == p for p, w in zip(parts, wanted, strict=True))


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize(("method", "path", "body", "lowest"), API_OPERATIONS, ids=lambda v: str(v)[:60])
def test_api_operation_by_role(world, identity, method, path, body, lowest):
    client, _user = identity_client(identity)
    if body is not None:
        body = {key: _fill(value, world) for key, value in body.items()}
    before = _state()
    response = getattr(client, method)(_fill(path, world), body, format="json")
    if response.status_code != 204:
        assert response["Content-Type"].startswith(("application/json", "text/plain")), response
    if RANK[identity] < RANK[lowest]:
        assert response.status_code in (401, 403), (response.status_code, response.content[:300])
        assert response.json()["code"] in ("not_authenticated", "permission_denied")
        assert _state() == before, "a refused request changed something"
    else:
        assert response.status_code not in (401, 403), (response.status_code, response.content[:300])
        assert response.status_code < 500 or response.status_code == 502, response.content[:300]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_nobody_writes_the_audit_trail_through_the_api(world, admin_user, method):
    for user in (role_user(roles.ADMINISTRATOR), admin_user):
        client = APIClient()
        client.force_login(user)
        before = list(AuditEntry.objects.values())
        for path in ("/api/audit/entries", f"/api/audit/entries/{world['entry']}"):
            response = getattr(client, method)(path, {"object_repr": "forged"}, format="json")
            assert response.status_code in (403, 405), response.content
        assert list(AuditEntry.objects.values()) == before


# --- the admin -----------------------------------------------------------------------------------------------
# (changelist, action, the lowest role offered it)
ADMIN_ACTIONS = [
    ("autoscaling/autoscalingconfig", "enable_configs", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "disable_configs", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "sync_now", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "reconcile_fleet", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "suspend_processes", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "resume_processes", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "resume_breaker", roles.OPERATOR),
    ("autoscaling/autoscalingconfig", "delete_selected", roles.ADMINISTRATOR),
    ("autoscaling/ippool", "delete_selected", roles.ADMINISTRATOR),
    ("templates_app/vmtemplate", "sync_from_vcenter", roles.OPERATOR),
    ("templates_app/vmtemplate", "retry_conversion", roles.ADMINISTRATOR),
    ("templates_app/vmtemplate", "delete_templates", roles.ADMINISTRATOR),
    ("fleet/managedinstance", "protect", roles.OPERATOR),
    ("fleet/managedinstance", "unprotect", roles.OPERATOR),
    ("fleet/managedinstance", "remove", roles.OPERATOR),
    ("fleet/orphan", "remove", roles.ADMINISTRATOR),
]
SELECTED = {
    "autoscaling/autoscalingconfig": "config",
    "autoscaling/ippool": "free_pool",
    "templates_app/vmtemplate": "spare",
    "fleet/managedinstance": "instance",
    "fleet/orphan": "orphan",
}
STAFF = [roles.VIEWER, roles.OPERATOR, roles.ADMINISTRATOR]


def offered(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    form = response.context.get("action_form")
    return set() if form is None else {value for value, _label in form.fields["action"].choices if value}


@pytest.mark.parametrize("role", STAFF)
def test_admin_offers_each_role_its_actions(world, role):
    client, _user = identity_client(role, api=False)
    for changelist in SELECTED:
        expected = {a for c, a, lowest in ADMIN_ACTIONS if c == changelist and RANK[role] >= RANK[lowest]}
        assert offered(client, f"/admin/{changelist}/") == expected, (role, changelist)


@pytest.mark.parametrize("role", ["anonymous", "nonstaff", roles.VIEWER, roles.OPERATOR])
@pytest.mark.parametrize(("changelist", "action", "lowest"), ADMIN_ACTIONS)
def test_a_forged_admin_action_post_changes_nothing(world, role, changelist, action, lowest):
    if RANK[role] >= RANK[lowest]:
        pytest.skip("allowed to this role")
    client, _user = identity_client(role, api=False)
    before = _state()
    body = {"action": action, "_selected_action": [world[SELECTED[changelist]]], "post": "yes", "confirmed": "yes"}
    if role not in STAFF:
        response = client.post(f"/admin/{changelist}/", body)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    else:
        response = client.post(f"/admin/{changelist}/", body, follow=True)
        assert response.status_code in (200, 403)
    if role in STAFF and response.status_code == 200 and offered(client, f"/admin/{changelist}/"):
        # Django ran none: the posted action is not among those the role is offered.
        assert "No action selected." in [str(m) for m in response.context["messages"]]
    assert _state() == before


@pytest.mark.parametrize(("identity", "allowed"), [("anonymous", False), ("nonstaff", False),
                                                   (roles.VIEWER, True), (roles.OPERATOR, True)])  # fmt: skip
def test_admin_is_for_staff_and_the_viewer_reads_every_page(world, identity, allowed):
    client, _user = identity_client(identity, api=False)
    pages = [
        "/admin/",
        "/admin/monitoring/",
        "/admin/templates_app/vmtemplate/",
        f"/admin/autoscaling/autoscalingconfig/{world['config']}/change/",
        "/admin/autoscaling/ippool/",
        "/admin/autoscaling/provisioningrun/",
        "/admin/fleet/managedinstance/",
        "/admin/events/scaleoutevent/",
        "/admin/events/scalingdecision/",
        "/admin/access/auditentry/",
    ]
    for page in pages:
        response = client.get(page)
        assert (response.status_code == 200) is allowed, (page, response.status_code)


# (method, admin page, the lowest role that may open it)
ADMIN_PAGES = [
    ("post", "/admin/templates_app/vmtemplate/sync/", roles.OPERATOR),
    ("get", "/admin/templates_app/vmtemplate/create-from-vm/", roles.ADMINISTRATOR),
    ("get", "/admin/fleet/managedinstance/adopt-vm/", roles.ADMINISTRATOR),
    ("get", "/admin/autoscaling/autoscalingconfig/add/", roles.ADMINISTRATOR),
    ("post", "/admin/autoscaling/autoscalingconfig/{spare_config}/delete/", roles.ADMINISTRATOR),
    ("post", "/admin/autoscaling/ippool/{free_pool}/delete/", roles.ADMINISTRATOR),
    ("post", "/admin/templates_app/vmtemplate/{spare}/delete/", roles.ADMINISTRATOR),
    ("get", "/admin/autoscaling/ippool/add/", roles.ADMINISTRATOR),
    ("get", "/admin/auth/user/add/", roles.ADMINISTRATOR),
    ("get", "/admin/auth/group/", roles.ADMINISTRATOR),
]


@pytest.mark.parametrize("role", STAFF)
@pytest.mark.parametrize(("method", "page", "lowest"), ADMIN_PAGES)
def test_admin_pages_by_role(world, role, method, page, lowest):
    client, _user = identity_client(role, api=False)
    before = _state()
    response = getattr(client, method)(_fill(page, world), {"post": "yes"} if method == "post" else None)
    if RANK[role] < RANK[lowest]:
        assert response.status_code == 403, (page, response.status_code)
        assert _state() == before
    else:
        assert response.status_code in (200, 302), (page, response.status_code)


def test_deleting_in_vcenter_is_for_administrators_even_with_the_delete_permission(world, client):
    """A user who may delete templates but not delete them in vCenter: refused on both doors, nothing deleted."""
    user = role_user(roles.OPERATOR, username="deleter")
    user.user_permissions.add(Permission.objects.get(codename="delete_vmtemplate"))
    client.force_login(user)
    body = {"action": "delete_templates", "_selected_action": [world["spare"]], "confirmed": "yes",
            "delete_in_vcenter": "on"}  # fmt: skip
    assert client.post("/admin/templates_app/vmtemplate/", body).status_code == 403
    api = APIClient()
    api.force_login(user)
    response = api.delete(f"/api/templates/{world['spare']}?delete_in_vcenter=true")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert VMTemplate.objects.filter(pk=world["spare"]).exists()
    # Deleting from the portal only is allowed to this user.
    assert api.delete(f"/api/templates/{world['spare']}").status_code == 204


# --- the groups ----------------------------------------------------------------------------------------------
def test_the_groups_hold_exactly_the_roles_permissions():
    for role, perms in ROLES.items():
        group = Group.objects.get(name=role)
        held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert held == set(perms), role


def test_every_listed_permission_exists_and_each_role_contains_the_one_below():
    existing = {f"{p.content_type.app_label}.{p.codename}" for p in Permission.objects.select_related("content_type")}
    for role, perms in ROLES.items():
        assert not set(perms) - existing, (role, sorted(set(perms) - existing))
    assert set(ROLES[roles.VIEWER]) < set(ROLES[roles.OPERATOR]) < set(ROLES[roles.ADMINISTRATOR])
    assert not any(p.split(".")[1].startswith(("add_", "change_", "delete_")) for p in ROLES[roles.OPERATOR])


def test_a_migrate_puts_a_hand_edited_group_back(django_db_blocker):
    from django.core.management import call_command

    group = Group.objects.get(name=roles.VIEWER)
    group.permissions.add(Permission.objects.get(codename="delete_ippool"))
    group.permissions.remove(Permission.objects.get(codename="view_ippool"))
    call_command("migrate", verbosity=0)
    held = set(group.permissions.values_list("codename", flat=True))
    assert "delete_ippool" not in held and "view_ippool" in held
