from django.db import migrations

SYNC_NAME = "templates: sync from vCenter"


def add_schedule(apps, schema_editor):
    # Keeps statuses honest (templates deleted in vCenter become "missing") without an operator pressing "sync".
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SYNC_NAME,
        defaults={"func": "templates_app.tasks.templates_sync", "schedule_type": "I", "minutes": 15, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SYNC_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("templates_app", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
