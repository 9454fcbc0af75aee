"""Provisioning against the lab: real Prometheus, Alertmanager, promtool, amtool and sshd, and the Jenkins stand-in."""

import json
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from autoscaling import services, tasks
from autoscaling.models import AutoscalingConfig, ProvisioningRun
from autoscaling.tests.conftest import amtool_route
from integrations.jenkins import JenkinsClient
from integrations.prometheus import PrometheusClient

pytestmark = [pytest.mark.lab, pytest.mark.django_db]


def groups(settings):
    with PrometheusClient(settings.PROMETHEUS_URL) as client:
        return {group.name: group for group in client.rules()}


def jenkins(settings):
    return JenkinsClient(settings.JENKINS_URL, settings.JENKINS_USER, settings.JENKINS_TOKEN)


def run_pass():
    run = services.provisioning_run(reason="test")
    assert run.status != ProvisioningRun.Status.QUEUED
    return run


def test_enabling_a_config_provisions_rule_route_targets_and_job(lab, monitoring, make_config, pool):
    prometheus = lab.info("prometheus")
    config = make_config(
        "web-enable",
        threshold=75,
        ip_pool=pool,
        f5_pool="web_pool",
        monitored_instances=[f"127.0.0.1:{prometheus['port']}"],
    )
    run = run_pass()
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    assert run.reloads == ["prometheus", "alertmanager"]

    group = groups(monitoring)["vmautoscale-web-enable"]
    rule = group.rules[0]
    assert rule.name == "AutoscaleHighCpu"
    assert rule.labels == {"service": "web-enable", "autoscale": "true", "managed_by": "vmautoscale", "metric": "cpu"}
    assert rule.expr.endswith("> 75") and 'service="web-enable"' in rule.expr
    assert rule.duration == 30

    assert amtool_route(lab, service="web-enable", autoscale="true") == "vmautoscale-web-enable"
    assert amtool_route(lab, service="web-enable") == "null"
    am_config = Path(monitoring.ALERTMANAGER_CONFIG_FILE).read_text()
    assert f"{monitoring.PORTAL_URL}/api/webhook/autoscale/web-enable" in am_config
    assert "send_resolved: true" in am_config

    info = jenkins(monitoring).job_info("vmautoscale-web-enable")
    params = {p.name: p for p in info.parameters}
    assert info.enabled
    for name in ["EVENT_ID", "SERVICE_NAME", "CALLBACK_URL", "CALLBACK_TOKEN", "VM_COUNT", "TEMPLATE_NAME"]:
        assert name in params
    assert params["CALLBACK_TOKEN"].type == "Password"
    assert params["SERVICE_NAME"].default == "web-enable"
    assert params["TEMPLATE_NAME"].default == config.template.name
    assert params["IP_POOL_ID"].default == str(pool.pk)
    assert params["F5_POOL"].default == "web_pool"

    targets = json.loads(Path(monitoring.PROMETHEUS_TARGETS_DIR, "web-enable.json").read_text())
    assert targets == [{"targets": [f"127.0.0.1:{prometheus['port']}"], "labels": {"service": "web-enable"}}]
    # Prometheus picks the file up by itself (file_sd), labelled with the service.
    deadline = time.monotonic() + 10
    with PrometheusClient(monitoring.PROMETHEUS_URL) as client:
        while True:
            pools = [t for t in client.targets() if t.scrape_pool == "vmautoscale"]
            if any(t.labels.get("service") == "web-enable" for t in pools):
                break
            assert time.monotonic() < deadline, "the file_sd target never appeared"
            time.sleep(0.2)

    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.SYNCED
    assert config.synced_at is not None and config.synced_digest
    assert config.sync_error == ""
