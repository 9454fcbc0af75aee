"""The inputs of a pass: settings and the database read into plain snapshots (`RenderContext`, `ServiceSpec`).

Everything after this point (rendering, the host, Jenkins) works on these snapshots and never on models.
"""

from django.conf import settings
from django.utils.crypto import salted_hmac

from autoscaling import rendering
from autoscaling.rendering import RenderContext, ServiceSpec

NODE_EXPORTER_PORT = 9100


def render_context():
    return RenderContext(
        portal_url=settings.PORTAL_URL,
        webhook_token=settings.WEBHOOK_TOKEN,
        prometheus_config_file=settings.PROMETHEUS_CONFIG_FILE,
        rules_file=settings.PROMETHEUS_RULES_FILE,
        targets_dir=settings.PROMETHEUS_TARGETS_DIR,
        rate_window=getattr(settings, "AUTOSCALE_RATE_WINDOW", "1m"),
        jenkinsfile=rendering.JENKINSFILE.read_text() if rendering.JENKINSFILE.is_file() else "",
    )


def trigger_token(service_name):
    """The Generic Webhook Trigger token of a service's job: secret, stable, different for every job."""
    return salted_hmac("vmautoscale.jenkins-trigger", service_name, algorithm="sha256").hexdigest()[:40]


def service_spec(config, extra_targets=()):
    return ServiceSpec(
        service_name=config.service_name,
        enabled=config.enabled,
        metric=config.metric,
        threshold=config.threshold,
        duration_seconds=config.duration_seconds,
        promql_expression=config.promql_expression or "",
        description=config.description or "",
        scale_out_step=config.scale_out_step,
        template_name=config.template.name if config.template_id else "",
        datacenter=config.datacenter,
        cluster=config.cluster,
        resource_pool=config.resource_pool,
        folder=config.folder,
        datastore=config.datastore,
        network=config.network,
        vm_name_pattern=config.vm_name_pattern,
        ip_pool_id=config.ip_pool_id,
        f5_pool=config.f5_pool,
        f5_partition=config.f5_partition,
        f5_member_port=config.f5_member_port,
        targets=tuple(sorted({*(config.monitored_instances or []), *extra_targets})),
        trigger_token=trigger_token(config.service_name),
    )


def service_specs():
    """Snapshots of every config, with the addresses of its VMs the pipeline put in use as scrape targets."""
    from autoscaling.models import AutoscalingConfig, IpAllocation

    vm_targets = {}
    in_use = IpAllocation.objects.filter(state=IpAllocation.State.IN_USE, event__isnull=False).values_list(
        "event__config__service_name", "address"
    )
    port = getattr(settings, "NODE_EXPORTER_PORT", NODE_EXPORTER_PORT)
    for service_name, address in in_use:
        vm_targets.setdefault(service_name, []).append(f"{address}:{port}")
    configs = AutoscalingConfig.objects.select_related("template").order_by("service_name")
    return [service_spec(config, vm_targets.get(config.service_name, ())) for config in configs]
