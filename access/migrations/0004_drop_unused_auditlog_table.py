from django.db import migrations

# django-auditlog's own migrations create its LogEntry table even though AUDITLOG_LOGENTRY_MODEL points at
# access.AuditEntry. Nothing writes to it, and no model of the app registry owns it, so PostgreSQL's TRUNCATE of the
# tables Django knows (a flush: tests, `manage.py flush`) fails on its foreign key to django_content_type. Drop it.


def drop(apps, schema_editor):
    cascade = " CASCADE" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP TABLE IF EXISTS auditlog_logentry{cascade}")


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0003_prune_schedule"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(drop, migrations.RunPython.noop)]
