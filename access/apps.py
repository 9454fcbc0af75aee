from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = _("Roles and audit trail")

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from access import audit

        audit.connect()
        # Users and their groups (the roles) are audited too; the password hash never is.
        audit.register(get_user_model(), exclude_fields=["password", "last_login"], m2m_fields={"groups"})
        audit.register(Group, m2m_fields={"permissions"})
        # Last of the apps with models in INSTALLED_APPS: every permission exists when this app's signal comes.
        post_migrate.connect(_roles_sync, sender=self, dispatch_uid="access_roles_sync")


def _roles_sync(sender, using="default", **kwargs):
    import logging

    from auditlog.context import disable_auditlog
    from django.contrib.auth.models import Group, Permission

    from access.roles import roles_sync

    # What the groups hold is access/roles.py's history (git), not the audit trail's: a migrate writes no entry.
    with disable_auditlog():
        missing_by_role = roles_sync(group_model=Group, permission_model=Permission)
    for role, missing in missing_by_role.items():
        if missing:
            logging.getLogger(__name__).warning("role %s: no such permissions: %s", role, ", ".join(missing))
