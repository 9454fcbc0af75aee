"""Provisioning requests, coalescing, the lease, the schedule, rendering merges and the admin (no lab needed)."""

from datetime import timedelta

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.utils import timezone

from autoscaling import rendering, services, tasks
from autoscaling.models import AutoscalingConfig, IpAllocation, ProvisioningRun, ProvisioningState
from pipeline import contract

pytestmark = pytest.mark.django_db

CTX = rendering.RenderContext(
    portal_url="http://127.0.0.1:8000",
    webhook_token="s3cret-webhook-token",
    prometheus_config_file="/etc/prometheus/prometheus.yml",
    rules_file="/etc/prometheus/rules/vmautoscale.rules.yml",
    targets_dir="/etc/prometheus/targets/vmautoscale",
)


def spec(name, **fields):
    values = {"enabled": True, "metric": "cpu", "threshold": 80, "duration_seconds": 60, **fields}
    return rendering.ServiceSpec(service_name=name, **values)


def test_many_saves_queue_one_pass(make_config, pool, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        configs = [make_config() for _ in range(5)]
        for config in configs:
            services.config_update(config=config, data={"threshold": 60})
        pool.description = "changed"
        pool.save()
        services.config_delete(config=configs[0])
    assert ProvisioningRun.objects.filter(status=ProvisioningRun.Status.QUEUED).count() == 1
    assert OrmQ.objects.count() == 1
    task = OrmQ.objects.get().task
    assert task["func"] == "autoscaling.tasks.provisioning_run_task"
    assert AutoscalingConfig.objects.filter(sync_state=AutoscalingConfig.SyncState.PENDING).count() == 4


def test_saving_only_sync_fields_queues_nothing(make_config, django_capture_on_commit_callbacks):
    config = make_config()
    with django_capture_on_commit_callbacks(execute=True):
        config.sync_error = "x"
        config.save(update_fields=["sync_error"])
    assert not ProvisioningRun.objects.exists()


def test_live_instances_become_scrape_targets_and_ip_allocations_do_not(make_config, pool):
    from autoscaling.provisioning.inputs import service_specs
    from fleet.models import ManagedInstance

    config = make_config(monitored_instances=["127.0.0.1:9100"])
    services.config_save(config=config)  # adopts 127.0.0.1:9100
    IpAllocation.objects.create(pool=pool, address="127.77.0.9", state=IpAllocation.State.IN_USE)
    for address, state in (("127.77.0.10", "in_service"), ("127.77.0.11", "removed"), ("127.77.0.12", "pending")):
        ManagedInstance.objects.create(config=config, ip_address=address, state=state)
    ManagedInstance.objects.create(config=config, monitor_target="web-7.example.com:9100", state="draining")
    targets = {s.service_name: s.targets for s in service_specs()}
    assert targets[config.service_name] == (
        "127.0.0.1:9100",
        "127.77.0.10:9100",
        "127.77.0.12:9100",
        "web-7.example.com:9100",
    )


def test_a_running_pass_blocks_a_second_one():
    ProvisioningState.objects.create(
        pk=1, lease_owner="other-worker", lease_expires_at=timezone.now() + timedelta(seconds=60)
    )
    queued = ProvisioningRun.objects.create(reason="test")
    run = services.provisioning_run(run_id=queued.pk, wait=0)
    assert run.status == ProvisioningRun.Status.QUEUED and run.started_at is None
    assert ProvisioningState.objects.get(pk=1).lease_owner == "other-worker"


def test_a_queued_pass_already_served_does_nothing():
    served = ProvisioningRun.objects.create(reason="test", status=ProvisioningRun.Status.MERGED)
    assert tasks.provisioning_run_task(served.pk) == ProvisioningRun.Status.MERGED
    assert ProvisioningState.objects.get(pk=1).lease_owner == ""


def test_the_periodic_schedule_exists_once():
    from django_q.models import Schedule

    # migrate created it (post_migrate); creating it again changes nothing.
    assert Schedule.objects.filter(name=services.SCHEDULE_NAME).count() == 1
    services.provisioning_schedule_ensure()
    services.provisioning_schedule_ensure()
    schedules = Schedule.objects.filter(name=services.SCHEDULE_NAME)
    assert schedules.count() == 1
    assert schedules.get().func == "autoscaling.tasks.provisioning_periodic"


def test_alertmanager_merge_keeps_every_unmanaged_part():
    current = """\
global:
  resolve_timeout: 5m
  smtp_smarthost: mail.example:25
route:
  receiver: team
  group_by: [alertname]
  routes:
    - receiver: pager
      matchers: ['severity="critical"']
      continue: true
    - receiver: vmautoscale-old
      matchers: ['service="old"']
receivers:
  - name: team
    email_configs: [{to: ops@example.org}]
  - name: pager
    webhook_configs: [{url: 'http://127.0.0.1:9999/'}]
  - name: vmautoscale-old
    webhook_configs: [{url: 'http://127.0.0.1:8000/api/webhook/autoscale/old'}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname]
templates: ['/etc/alertmanager/*.tmpl']
"""
    merged = yaml.safe_load(rendering.alertmanager_config_text(current, [spec("web")], CTX))
    original = yaml.safe_load(current)
    for key in ("global", "inhibit_rules", "templates"):
        assert merged[key] == original[key]
    assert merged["route"]["receiver"] == "team" and merged["route"]["group_by"] == ["alertname"]
    assert merged["route"]["routes"][0]["receiver"] == "vmautoscale-web"
    assert merged["route"]["routes"][1:] == [original["route"]["routes"][0]]
    assert [r["name"] for r in merged["receivers"]] == ["team", "pager", "vmautoscale-web"]
    assert merged["receivers"][:2] == original["receivers"][:2]
    hook = merged["receivers"][2]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8000/api/webhook/autoscale/web"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials": "s3cret-webhook-token"}
    # Nothing to change: the text is returned as it is, comments and all.
    text = rendering.alertmanager_config_text(current, [spec("web")], CTX)
    assert rendering.alertmanager_config_text(text, [spec("web")], CTX) is text
    unmanaged_only = "# hand-written\nroute:\n  receiver: team\nreceivers:\n  - name: team\n"
    assert rendering.alertmanager_config_text(unmanaged_only, [], CTX) == unmanaged_only


def test_prometheus_config_gets_the_scrape_job_and_rule_file_once():
    current = "# mine\nglobal:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: node\n    static_configs: []\n"
    merged = rendering.prometheus_config_text(current, CTX)
    doc = yaml.safe_load(merged)
    assert doc["global"] == {"scrape_interval": "15s"}
    # The services' VMs, and the portal's own /metrics (autoscaling/tests/test_portal_rules.py).
    assert [job["job_name"] for job in doc["scrape_configs"]] == ["node", "vmautoscale", "vmautoscale-portal"]
    assert doc["scrape_configs"][1]["file_sd_configs"][0]["files"] == ["/etc/prometheus/targets/vmautoscale/*.json"]
    assert doc["rule_files"] == ["/etc/prometheus/rules/vmautoscale.rules.yml"]
    assert rendering.prometheus_config_text(merged, CTX) is merged
    with_glob = current + "rule_files:\n  - rules/*.yml\n  - other.yml\n"
    assert "vmautoscale.rules.yml" not in rendering.prometheus_config_text(with_glob, CTX)


def test_rules_render_is_valid_yaml_with_the_expected_rule():
    text = rendering.rules_text([spec("web"), spec("db", metric="memory", threshold=85.5), spec("off")], CTX)
    groups = yaml.safe_load(text)["groups"]
    assert [g["name"] for g in groups] == ["vmautoscale-db", "vmautoscale-off", "vmautoscale-web"]
    memory = groups[0]["rules"][0]
    assert memory["alert"] == "AutoscaleHighMemory"
    assert memory["expr"].endswith("> 85.5") and 'node_memory_MemAvailable_bytes{service="db"}' in memory["expr"]
    assert memory["labels"] == {
        "service": "db",
        "autoscale": "true",
        "managed_by": "vmautoscale",
        "metric": "memory",
        "direction": "out",
    }
    disabled = rendering.ServiceSpec("gone", False, "cpu", 80, 60)
    assert "gone" not in rendering.rules_text([disabled], CTX)
    custom = rendering.rule_group(spec("c", promql_expression="avg(node_load1) * 10"), CTX)
    assert custom["rules"][0]["expr"] == "(avg(node_load1) * 10) > 80"


def test_a_scale_in_threshold_renders_a_second_rule_for_the_step_policy_only():
    step = rendering.rule_group(spec("web", scale_in_threshold=20, scale_in_duration_seconds=900), CTX)
    out, scale_in = step["rules"]
    assert (out["labels"]["direction"], scale_in["labels"]["direction"]) == ("out", "in")
    assert scale_in["alert"] == "AutoscaleLowCpu" and scale_in["for"] == "900s"
    assert scale_in["expr"] == out["expr"].replace("> 80", "< 20")
    assert scale_in["annotations"]["summary"] == "web: CPU below 20%"
    assert len(rendering.rule_group(spec("web"), CTX)["rules"]) == 1
    tracking = spec("web", policy_type="target_tracking", scale_in_threshold=20)
    assert len(rendering.rule_group(tracking, CTX)["rules"]) == 1
    # Target tracking's scale-in reads the highest average of the scale-in window, in one query for all.
    query = rendering.idle_peaks_query([spec("a", scale_in_duration_seconds=300), spec("b")], CTX)
    assert query.startswith("max_over_time((") and "[300s:])" in query and "[600s:])" in query
    assert query.count(" or ") == 1


def test_job_xml_escapes_values_and_holds_no_token():
    xml = rendering.job_xml(spec("web", f5_pool="a<b"), CTX)
    assert "<defaultValue>a&lt;b</defaultValue>" in xml and "<disabled>false</disabled>" in xml
    import xml.etree.ElementTree as ET

    trigger = ET.fromstring(xml.encode()).find(".//org.jenkinsci.plugins.gwt.GenericTrigger")
    # The Generic Webhook Trigger's token is a Jenkins credential, never a value written into config.xml...
    assert trigger.findtext("token") in ("", None)
    assert trigger.findtext("tokenCredentialId") == contract.TRIGGER_CREDENTIAL_ID == "vmautoscale-trigger"
    # ...and a caller can set SERVICE_NAME only (matched against this job's service): not the callback URL or token,
    # not the placement, and nothing from the query string or the headers.
    keys = [v.findtext("key") for v in trigger.iter("org.jenkinsci.plugins.gwt.GenericVariable")]
    assert keys == ["SERVICE_NAME"]
    assert trigger.find("genericRequestVariables") is None and trigger.find("genericHeaderVariables") is None
    assert (trigger.findtext("regexpFilterText"), trigger.findtext("regexpFilterExpression")) == (
        "$SERVICE_NAME",
        "^web$",
    )

    names = [n.text for n in ET.fromstring(xml.encode()).iter("name")]
    assert names == list(contract.PARAMETER_NAMES)


def test_admin_pages_render(client, make_config, pool):
    admin = get_user_model().objects.create(username="admin", is_staff=True, is_superuser=True)
    client.force_login(admin)
    config = make_config(ip_pool=pool)
    assert client.get("/admin/autoscaling/autoscalingconfig/").status_code == 200
    assert client.get("/admin/autoscaling/autoscalingconfig/add/").status_code == 200
    assert client.get("/admin/autoscaling/ippool/add/").status_code == 200
    page = client.get(f"/admin/autoscaling/autoscalingconfig/{config.pk}/change/")
    assert page.status_code == 200
    assert b"AutoscaleHighCpu" in page.content and b"vmautoscale-" in page.content
    assert b"CALLBACK_TOKEN" in page.content
    assert client.get("/admin/autoscaling/ippool/").status_code == 200
    assert client.get(f"/admin/autoscaling/ippool/{pool.pk}/change/").status_code == 200
    assert client.get("/admin/autoscaling/ipallocation/").status_code == 200
    assert client.get("/admin/autoscaling/provisioningrun/").status_code == 200

    response = client.post(
        "/admin/autoscaling/autoscalingconfig/",
        {"action": "disable_configs", "_selected_action": [config.pk]},
    )
    assert response.status_code == 302
    config.refresh_from_db()
    assert config.enabled is False
    client.post("/admin/autoscaling/autoscalingconfig/", {"action": "sync_now", "_selected_action": [config.pk]})
    run = ProvisioningRun.objects.get(status=ProvisioningRun.Status.QUEUED)
    assert run.full_check is True


def test_what_is_pushed_does_not_depend_on_the_language():
    from django.utils import translation

    specs = [spec("web"), spec("db", metric="memory")]
    with translation.override("en"):
        english = (
            rendering.rules_text(specs, CTX),
            rendering.job_xml(specs[1], CTX),
            rendering.spec_digest(specs[1], CTX),
        )
    with translation.override("ko"):
        korean = (
            rendering.rules_text(specs, CTX),
            rendering.job_xml(specs[1], CTX),
            rendering.spec_digest(specs[1], CTX),
        )
    assert english == korean


def test_the_job_defines_the_contracts_parameters_and_the_jenkinsfile_none():
    """The contract is the one list: a `parameters {}` in the Jenkinsfile would replace the job's definitions (and
    their per-service defaults) on the first build, so the file declares none."""
    import re
    import xml.etree.ElementTree as ET

    source = rendering.JENKINSFILE.read_text()
    assert not re.search(r"^\s*parameters\s*\{", source, re.M)
    assert not re.search(r"\b(?:string|password|text|booleanParam|choice)\(name:", source)
    root = ET.fromstring(rendering.job_xml(spec("web", f5_partition="", scale_out_step=2), CTX).encode())
    definitions = root.find("./properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions")
    declared = {d.findtext("name"): (d.tag, d.findtext("description"), d.findtext("defaultValue")) for d in definitions}
    assert list(declared) == list(contract.PARAMETER_NAMES)
    for parameter in contract.PARAMETERS:
        kind, description, _default = declared[parameter.name]
        assert description == parameter.description
        assert kind.endswith("PasswordParameterDefinition" if parameter.secret else "StringParameterDefinition")
    assert declared["CALLBACK_TOKEN"][2] in ("", None)  # a secret never has a stored default
    assert declared["F5_PARTITION"][2] == "Common" and declared["VM_COUNT"][2] == "2"
    variables = [v.findtext("key") for v in root.iter("org.jenkinsci.plugins.gwt.GenericVariable")]
    assert variables == list(contract.TRIGGER_VARIABLES) == ["SERVICE_NAME"]


def test_a_queued_pass_logs_what_asked_for_it(caplog):
    caplog.set_level("INFO", logger="autoscaling.services")
    user = get_user_model().objects.create_user(username="operator-7")
    run = services.provisioning_request(reason="config demo-web saved", user=user)
    assert f"provisioning pass {run.pk} queued: config demo-web saved (operator-7)" in caplog.text
