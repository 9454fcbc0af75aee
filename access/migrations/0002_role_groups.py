from django.db import migrations

from access.roles import ROLES, roles_sync


def groups_create(apps, schema_editor):
    # The permissions that exist already go in now; the post_migrate sync (access/apps.py) adds those that Django
    # creates after the migrations (a fresh database, or an app's new permission), and keeps the groups in step
    # with access/roles.py from then on.
    roles_sync(group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"))


def groups_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0001_audit_entry"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(groups_create, groups_delete)]
