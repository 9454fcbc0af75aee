"""The inputs of a pass: settings and the database read into plain snapshots (`RenderContext`, `ServiceSpec`).

Everything after this point (rendering, the host, Jenkins) works on these snapshots and never on models.
"""

import posixpath

from django.conf import settings

from autoscaling import rendering
from autoscaling.rendering import RenderContext, ServiceSpec

NODE_EXPORTER_PORT = 9100


def render_context():
    rules_file = settings.PROMETHEUS_RULES_FILE
    return RenderContext(
        portal_url=settings.PORTAL_URL,
        webhook_token=settings.WEBHOOK_TOKEN,
        prometheus_config_file=settings.PROMETHEUS_CONFIG_FILE,
        rules_file=rules_file,
        targets_dir=settings.PROMETHEUS_TARGETS_DIR,
        rate_window=getattr(settings, "AUTOSCALE_RATE_WINDOW", "1m"),
        jenkinsfile=rendering.JENKINSFILE.read_text() if rendering.JENKINSFILE.is_file() else "",
        portal_rules_file=settings.PORTAL_RULES_FILE
        or posixpath.join(posixpath.dirname(rules_file), rendering.PORTAL_RULES_FILE_NAME),
        portal_alert_rules=settings.PORTAL_ALERT_RULES,
        portal_scrape_job=settings.PORTAL_SCRAPE_JOB,
        metrics_url=settings.PORTAL_METRICS_URL,
        scrape_interval=settings.PORTAL_SCRAPE_INTERVAL,
        metrics_token=settings.METRICS_TOKEN,
        alert_labels=tuple(settings.PORTAL_ALERT_LABELS),
    )


def service_spec(config, targets=None):
    """The snapshot of one config; `targets` are its scrape targets (default: read from its inventory)."""
    if targets is None:
        targets = instance_targets(config_ids=[config.pk]).get(config.pk, ())
    return ServiceSpec(
        service_name=config.service_name,
        enabled=config.enabled,
        metric=config.metric,
        threshold=config.threshold,
        duration_seconds=config.duration_seconds,
        promql_expression=config.promql_expression or "",
        description=config.description or "",
        scale_out_step=config.scale_out_step,
        policy_type=config.policy_type,
        scale_in_threshold=config.scale_in_threshold,
        scale_in_duration_seconds=config.scale_in_duration_seconds,
        drain_timeout_seconds=config.drain_timeout_seconds,
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
        targets=tuple(sorted(set(targets))),
    )


def instance_targets(*, config_ids=None):
    """{config id: scrape targets}: each live instance of the inventory, at its scrape target or its address on
    the node exporter port. One query (`config_ids` None: every config)."""
    from autoscaling.models import AutoscalingConfig

    # The fleet's model, reached through its relation to the config: the fleet app sits above this one.
    instance_model = AutoscalingConfig._meta.get_field("instances").related_model
    port = getattr(settings, "NODE_EXPORTER_PORT", NODE_EXPORTER_PORT)
    rows = instance_model.objects.filter(state__in=instance_model.LIVE_STATES)
    if config_ids is not None:
        rows = rows.filter(config_id__in=list(config_ids))
    targets = {}
    for config_id, target, address in rows.values_list("config_id", "monitor_target", "ip_address"):
        if target or address:
            targets.setdefault(config_id, []).append(target or f"{address}:{port}")
    return targets


def service_specs():
    """Snapshots of every config, with its live instances as scrape targets."""
    from autoscaling.models import AutoscalingConfig

    targets = instance_targets()
    configs = AutoscalingConfig.objects.select_related("template").order_by("service_name")
    return [service_spec(config, targets.get(config.pk, ())) for config in configs]
