"""The existing configs' monitored instances become adopted instances of their fleets (as saving a config now does:
fleet.services.config_monitored_instances_sync)."""

import ipaddress

from django.db import migrations
from django.utils import timezone


def _host(target):
    try:
        return str(ipaddress.IPv4Address(target.rsplit(":", 1)[0].strip("[]")))
    except ValueError:
        return None


def adopt(apps, schema_editor):
    AutoscalingConfig = apps.get_model("autoscaling", "AutoscalingConfig")
    ManagedInstance = apps.get_model("fleet", "ManagedInstance")
    InstanceChange = apps.get_model("fleet", "InstanceChange")
    now = timezone.now()
    for config in AutoscalingConfig.objects.iterator():
        known = set(
            ManagedInstance.objects.filter(config=config, origin="adopted").values_list("monitor_target", flat=True)
        )
        for target in dict.fromkeys(config.monitored_instances or []):
            if target in known:
                continue
            instance = ManagedInstance.objects.create(
                config=config,
                origin="adopted",
                state="in_service",
                in_service_at=now,
                ip_address=_host(target),
                monitor_target=target,
                protected_from_scale_in=True,
            )
            InstanceChange.objects.create(
                instance=instance,
                to_state="in_service",
                reason=f"Adopted from the config's monitored instances ({target}) when the inventory was introduced.",
                actor="migration",
            )


class Migration(migrations.Migration):
    dependencies = [("fleet", "0003_reconcile_schedule")]

    operations = [migrations.RunPython(adopt, migrations.RunPython.noop)]
