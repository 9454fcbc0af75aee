"""Indexes for a history of a million events (issue 19): the search by VM name or IP.

PostgreSQL gets a GIN index over the event's VM names and IPs together, `(vm_names || vm_ips) jsonb_path_ops`: the
expression events.selectors.EventHasVm filters with (`@>`), so a search by an exact name or address reads the
index. SQLite has no such index and answers the same search from json_each over the rows.
"""

from django.db import migrations

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

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
