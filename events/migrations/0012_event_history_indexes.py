"""Indexes for a history of a million events (issue 19).

(service_name, status, -created_at): a page of one service's events of one status, and its count, read the index
alone. The service name's own index goes: event_service_created (service_name, -created_at) serves its lookups.

PostgreSQL gets a GIN index over the event's VM names and IPs together, `(vm_names || vm_ips) jsonb_path_ops`: the
expression events.selectors.EventHasVm filters with (`@>`), so a search by an exact name or address reads the
index. SQLite has no such index and answers the same search from json_each over the rows.
"""

from django.db import migrations, models

INDEX = "event_vms_gin"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON events_scaleoutevent USING gin ((vm_names || vm_ips) jsonb_path_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("events", "0011_merge_roles")]

    operations = [
        migrations.AlterField(
            model_name="scaleoutevent",
            name="service_name",
            field=models.CharField(max_length=48, verbose_name="service"),
        ),
        migrations.AddIndex(
            model_name="scaleoutevent",
            index=models.Index(fields=["service_name", "status", "-created_at"], name="event_service_status_created"),
        ),
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
