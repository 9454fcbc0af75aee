from django.db import migrations

PRUNE_NAME = "audit: prune entries past AUDIT_RETENTION_DAYS"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=PRUNE_NAME, defaults={"func": "access.tasks.audit_prune", "schedule_type": "D", "repeats": -1}
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=PRUNE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0002_role_groups"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
