from django.db import migrations, models


def decided_when_received(apps, schema_editor):
    """The notifications stored before this migration were decided as they were received, in the same request."""
    notifications = apps.get_model("events", "AlertNotification")
    notifications.objects.filter(decided_at__isnull=True).update(decided_at=models.F("received_at"))


def cache_table(apps, schema_editor):
    """The decider's lock lives in the cache: the database cache's table is created here too (as `manage.py
    createcachetable` does; nothing for another cache backend), so a migrated database can decide."""
    from django.core.management import call_command

    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("autoscaling", "0011_merge_dry_run_safety"),
        ("events", "0016_event_config_action_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertnotification",
            name="decided_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="decided at"),
        ),
        migrations.RunPython(decided_when_received, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(cache_table, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="alertnotification",
            index=models.Index(
                condition=models.Q(("decided_at__isnull", True)), fields=["id"], name="notification_waiting"
            ),
        ),
    ]
