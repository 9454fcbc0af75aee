"""Changes that alter the desired state ask for a provisioning pass once they commit. No I/O here.

(autoscaling/ipam.py asks for a pass itself when an address goes into or out of use: VMs are scrape targets.)
"""

from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from autoscaling.models import AutoscalingConfig, IpPool
from autoscaling.services import provisioning_request_on_commit, provisioning_schedule_ensure

SYNC_FIELDS = {"sync_state", "synced_at", "synced_digest", "sync_error"}


@receiver(post_save, sender=AutoscalingConfig, dispatch_uid="autoscaling_config_saved")
def config_saved(sender, instance, update_fields=None, raw=False, **kwargs):
    if raw or (update_fields and set(update_fields) <= SYNC_FIELDS):
        return
    provisioning_request_on_commit(reason=f"config {instance.service_name} saved")


@receiver(post_delete, sender=AutoscalingConfig, dispatch_uid="autoscaling_config_deleted")
def config_deleted(sender, instance, **kwargs):
    provisioning_request_on_commit(reason=f"config {instance.service_name} deleted")


@receiver(post_save, sender=IpPool, dispatch_uid="autoscaling_pool_saved")
@receiver(post_delete, sender=IpPool, dispatch_uid="autoscaling_pool_deleted")
def pool_changed(sender, instance, raw=False, **kwargs):
    if raw:
        return
    provisioning_request_on_commit(reason=f"IP pool {instance.name} changed")


@receiver(post_save, sender="templates_app.VMTemplate", dispatch_uid="autoscaling_template_saved")
def template_saved(sender, instance, raw=False, **kwargs):
    # The template's name is a default parameter of the services' Jenkins jobs.
    if raw or not instance.configs.exists():
        return
    provisioning_request_on_commit(reason=f"template {instance.name} changed")


def ensure_schedule(sender, **kwargs):
    provisioning_schedule_ensure()


def connect_post_migrate(app_config):
    post_migrate.connect(ensure_schedule, sender=app_config, dispatch_uid="autoscaling_schedule")
