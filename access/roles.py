"""The portal's roles: which permissions each group holds. The one place to edit when a permission is added.

Three groups, synced from this module by a migration and after every `migrate` (post_migrate): a group's
permissions are exactly those listed here (a hand edit in the admin is undone by the next migrate; make another
group for anything else). A user gets a role by joining its group, and must be staff (active) to use the portal:
the API and the admin refuse everyone else.

- viewer: reads everything (every list, detail, preview, diff of what the portal manages, the audit trail).
- operator: the viewer's reads and the operator actions: enable and disable autoscaling, manual scale-out and
  scale-in, provisioning sync, fleet reconcile, template sync, protect / unprotect instances, suspend / resume a
  service's scaling processes and resume its circuit breaker.
- administrator: the operator's and every change: templates (a template from a VM powers it off), configs, IP
  pools, instances (adopting a VM), users and groups, deleting templates in vCenter and removing orphans.

Operator actions are custom permissions in the models' Meta (e.g. `autoscaling.enable_autoscalingconfig`); the
doors use the constants below, so the API and the admin ask for the same permission.
"""

from django.utils.translation import gettext_lazy as _

# --- operator actions (custom permissions, declared in the models' Meta) ------------------------------------
CONFIG_ENABLE = "autoscaling.enable_autoscalingconfig"
CONFIG_RECONCILE = "autoscaling.reconcile_autoscalingconfig"
PROVISIONING_SYNC = "autoscaling.request_provisioningrun"
SCALE_OUT = "events.request_scale_out"
SCALE_IN = "events.request_scale_in"
INSTANCE_PROTECT = "fleet.protect_managedinstance"
TEMPLATE_SYNC = "templates_app.sync_vmtemplate"
# Suspend and resume a service's scaling processes, resume its circuit breaker at once.
SCALING_SUSPEND = "autoscaling.suspend_scaling"
# --- administrator-only actions that change vCenter --------------------------------------------------------
TEMPLATE_DELETE_IN_VCENTER = "templates_app.delete_in_vcenter_vmtemplate"
ORPHAN_REMOVE = "fleet.remove_orphan"
# --- administrator-only reads ------------------------------------------------------------------------------
# The full prometheus.yml and alertmanager.yml of a provisioning pass (secrets masked): parts the portal does not
# manage.
UNMANAGED_DIFF_VIEW = "autoscaling.view_unmanaged_diff"

VIEWER = "viewer"
OPERATOR = "operator"
ADMINISTRATOR = "administrator"

LABELS = {VIEWER: _("Viewer"), OPERATOR: _("Operator"), ADMINISTRATOR: _("Administrator")}


def _model_perms(app_model, *kinds):
    app, model = app_model.split(".")
    return [f"{app}.{kind}_{model}" for kind in kinds]


def _views(*app_models):
    return [perm for app_model in app_models for perm in _model_perms(app_model, "view")]


def _all(*app_models):
    return [perm for app_model in app_models for perm in _model_perms(app_model, "add", "change", "delete", "view")]


_VIEWER_PERMISSIONS = _views(
    "templates_app.vmtemplate",
    "autoscaling.autoscalingconfig",
    "autoscaling.ippool",
    "autoscaling.ipallocation",
    "autoscaling.provisioningrun",
    "autoscaling.provisioningstate",
    "autoscaling.processsuspension",
    "autoscaling.circuitbreaker",
    "fleet.managedinstance",
    "fleet.instancechange",
    "fleet.reconcilerun",
    "fleet.orphan",
    "events.scaleoutevent",
    "events.eventaction",
    "events.alertnotification",
    "events.scalingdecision",
    "events.evaluatorstate",
    "access.auditentry",
)

_OPERATOR_PERMISSIONS = [
    *_VIEWER_PERMISSIONS,
    CONFIG_ENABLE,
    CONFIG_RECONCILE,
    PROVISIONING_SYNC,
    SCALE_OUT,
    SCALE_IN,
    INSTANCE_PROTECT,
    TEMPLATE_SYNC,
    SCALING_SUSPEND,
]

_ADMINISTRATOR_PERMISSIONS = [
    *_OPERATOR_PERMISSIONS,
    *_all("templates_app.vmtemplate", "autoscaling.autoscalingconfig", "autoscaling.ippool"),
    *_all("autoscaling.ipallocation"),
    *_model_perms("fleet.managedinstance", "add"),
    TEMPLATE_DELETE_IN_VCENTER,
    ORPHAN_REMOVE,
    UNMANAGED_DIFF_VIEW,
    *_all("auth.user", "auth.group"),
    *_views("auth.permission"),
]

# role (group name) -> the permissions its group holds, "app_label.codename".
ROLES = {
    VIEWER: sorted(set(_VIEWER_PERMISSIONS)),
    OPERATOR: sorted(set(_OPERATOR_PERMISSIONS)),
    ADMINISTRATOR: sorted(set(_ADMINISTRATOR_PERMISSIONS)),
}


def roles_sync(*, group_model, permission_model, roles=None):
    """Make each role's group hold exactly its permissions (creating the group). `group_model` and
    `permission_model` are passed in, so a migration can run this with its historical models.

    Returns {role: [permissions listed here but not (yet) in the database]}: a permission whose app has not been
    migrated yet is added by the post_migrate sync that follows."""
    missing = {}
    for role, perms in (roles or ROLES).items():
        group, _created = group_model.objects.get_or_create(name=role)
        wanted = {tuple(perm.split(".", 1)) for perm in perms}
        found = [
            p
            for p in permission_model.objects.filter(codename__in={codename for _app, codename in wanted})
            .select_related("content_type")
            .iterator()
            if (p.content_type.app_label, p.codename) in wanted
        ]
        group.permissions.set(found)
        have = {(p.content_type.app_label, p.codename) for p in found}
        missing[role] = sorted(f"{app}.{codename}" for app, codename in wanted - have)
    return missing
