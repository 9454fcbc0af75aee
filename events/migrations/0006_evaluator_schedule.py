from django.db import migrations

EVALUATOR_NAME = "events: evaluate firing alerts and metrics"


def add_schedule(apps, schema_editor):
    # Every minute; each run evaluates every EVALUATOR_INTERVAL seconds until the next run takes over
    # (events/evaluator.py).
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=EVALUATOR_NAME,
        defaults={"func": "events.tasks.evaluator_run", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=EVALUATOR_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0005_evaluator"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
