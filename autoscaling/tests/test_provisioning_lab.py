"""Provisioning against the lab: real Prometheus, Alertmanager, promtool, amtool and sshd, and the Jenkins stand-in."""

import json
import time
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from autoscaling import services, tasks
from autoscaling.models import AutoscalingConfig, ProvisioningRun
from autoscaling.tests.conftest import amtool_route
from common.clients import jenkins_client, prometheus_client
from integrations.prometheus import PrometheusClient

pytestmark = [pytest.mark.lab, pytest.mark.django_db]


def groups(settings):
    with prometheus_client() as client:
        return {group.name: group for group in client.rules()}


def evaluated_rule(settings, group_name, timeout=10):
    """The group's first rule once Prometheus has evaluated it (health ok)."""
    deadline = time.monotonic() + timeout
    while True:
        group = groups(settings).get(group_name)
        if group and group.rules[0].health == "ok":
            return group.rules[0]
        assert time.monotonic() < deadline, f"{group_name} was not evaluated: {group}"
        time.sleep(0.2)


def jenkins(settings):
    return jenkins_client()


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
    assert rule.labels == {
        "service": "web-enable",
        "autoscale": "true",
        "managed_by": "vmautoscale",
        "metric": "cpu",
        "direction": "out",
    }
    assert len(group.rules) == 1  # no scale-in threshold: no scale-in rule
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


def test_a_scale_in_threshold_adds_a_second_rule_routed_to_the_same_webhook(lab, monitoring, make_config):
    config = make_config(
        "web-in", threshold=75, scale_in_threshold=20, scale_in_duration_seconds=120, monitored_instances=[]
    )
    run = run_pass()  # validated on the host by promtool and amtool before the swap
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    out, scale_in = evaluated_rules(monitoring, "vmautoscale-web-in")
    assert (out.name, out.labels["direction"], out.expr.endswith("> 75")) == ("AutoscaleHighCpu", "out", True)
    assert scale_in.name == "AutoscaleLowCpu"
    assert scale_in.labels == {
        "service": "web-in",
        "autoscale": "true",
        "managed_by": "vmautoscale",
        "metric": "cpu",
        "direction": "in",
    }
    assert scale_in.expr.endswith("< 20") and 'service="web-in"' in scale_in.expr
    assert scale_in.duration == 120
    for direction in ("in", "out"):
        assert amtool_route(lab, service="web-in", autoscale="true", direction=direction) == "vmautoscale-web-in"
    # Both directions go to the one webhook of the service.
    am_config = Path(monitoring.ALERTMANAGER_CONFIG_FILE).read_text()
    assert am_config.count(f"{monitoring.PORTAL_URL}/api/webhook/autoscale/web-in") == 1

    # Target tracking decides scale-in from the metric: no scale-in rule, whatever the threshold field says.
    services.config_update(config=config, data={"policy_type": "target_tracking", "target_value": 60})
    run = run_pass()
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    assert [rule.name for rule in groups(monitoring)["vmautoscale-web-in"].rules] == ["AutoscaleHighCpu"]


def evaluated_rules(settings, group_name, timeout=10):
    """The group's rules once Prometheus has evaluated all of them (health ok)."""
    deadline = time.monotonic() + timeout
    while True:
        group = groups(settings).get(group_name)
        if group and all(rule.health == "ok" for rule in group.rules):
            return group.rules
        assert time.monotonic() < deadline, f"{group_name} was not evaluated: {group}"
        time.sleep(0.2)


def test_disable_and_delete_undo_each(lab, monitoring, make_config):
    config = make_config("web-undo")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    assert "vmautoscale-web-undo" in groups(monitoring)

    services.config_disable(config=config)
    run = run_pass()
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    assert "vmautoscale-web-undo" not in groups(monitoring)
    assert amtool_route(lab, service="web-undo", autoscale="true") == "null"
    assert "vmautoscale-web-undo" not in Path(monitoring.ALERTMANAGER_CONFIG_FILE).read_text()
    assert not Path(monitoring.PROMETHEUS_TARGETS_DIR, "web-undo.json").exists()
    assert jenkins(monitoring).job_info("vmautoscale-web-undo").enabled is False
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.SYNCED

    services.config_delete(config=config)
    run = run_pass()
    assert {"job": "vmautoscale-web-undo", "action": "delete"} in run.jenkins_changes
    assert jenkins(monitoring).job_exists("vmautoscale-web-undo") is False


def test_a_rule_promtool_rejects_is_held_back_and_the_other_services_are_pushed(lab, monitoring, make_config):
    good = make_config("web-good")
    old = make_config("web-old", promql_expression="node_load1 * 100")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    rules_file = Path(monitoring.PROMETHEUS_RULES_FILE)
    old_expr = evaluated_rule(monitoring, "vmautoscale-web-old").expr

    # Saving it is refused now (Prometheus parses it at save time)...
    with pytest.raises(ValidationError) as refused:
        make_config("web-bad", promql_expression="node_load1 +* 2")
    assert "Prometheus cannot parse" in str(refused.value.message_dict["promql_expression"])
    # ...but expressions stored while Prometheus could not be asked (or before the check existed) are stopped by
    # promtool on the host, and they hold back only their own services: a new one, and one already pushed.
    bad = make_config("web-bad")
    AutoscalingConfig.objects.filter(pk__in=[bad.pk, old.pk]).update(promql_expression="node_load1 +* 2")
    services.config_update(config=good, data={"threshold": 55})
    run = run_pass()
    assert run.status == ProvisioningRun.Status.FAILED
    assert "held back" in run.error and "vmautoscale-web-bad" in run.error and "vmautoscale-web-old" in run.error
    assert "web-good" not in run.error
    assert run.reloads == ["prometheus", "alertmanager"]
    assert not Path(str(rules_file) + ".tmp").exists()
    assert "> 55" in evaluated_rule(monitoring, "vmautoscale-web-good").expr  # pushed
    assert evaluated_rule(monitoring, "vmautoscale-web-old").expr == old_expr  # as it was on the host
    assert "vmautoscale-web-bad" not in groups(monitoring)  # it had none

    for config in (bad, old):
        config.refresh_from_db()
        assert config.sync_state == AutoscalingConfig.SyncState.ERROR
        assert "promtool" in config.sync_error and config.service_name in config.sync_error
    good.refresh_from_db()
    assert (good.sync_state, good.sync_error) == (AutoscalingConfig.SyncState.SYNCED, "")

    # Not remembered as pushed: the next pass tries again, fails the same way, and changes nothing more.
    before = rules_file.read_text()
    run = run_pass()
    assert run.status == ProvisioningRun.Status.FAILED and "held back" in run.error
    assert run.reloads == [] and rules_file.read_text() == before
    good.refresh_from_db()
    assert good.sync_state == AutoscalingConfig.SyncState.SYNCED

    for config in (bad, old):
        services.config_update(config=config, data={"promql_expression": "node_load1 * 50"})
    run = run_pass()
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    for config in (bad, old):
        config.refresh_from_db()
        assert config.sync_state == AutoscalingConfig.SyncState.SYNCED and config.sync_error == ""
        assert "node_load1 * 50" in evaluated_rule(monitoring, f"vmautoscale-{config.service_name}").expr
    assert run_pass().status == ProvisioningRun.Status.UNCHANGED


def test_a_failed_reload_puts_the_previous_files_back(lab, monitoring, make_config):
    config = make_config("web-reload")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    rules_file = Path(monitoring.PROMETHEUS_RULES_FILE)
    before = rules_file.read_text()

    services.config_update(config=config, data={"threshold": 55})
    monitoring.PROMETHEUS_RELOAD_COMMAND = "echo container restart failed >&2; exit 3"
    run = run_pass()
    assert run.status == ProvisioningRun.Status.FAILED
    assert "container restart failed" in run.error and "put back" in run.error
    assert rules_file.read_text() == before
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.ERROR

    monitoring.PROMETHEUS_RELOAD_COMMAND = ""
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    assert "> 55" in groups(monitoring)["vmautoscale-web-reload"].rules[0].expr


def test_an_unreachable_host_leaves_a_clear_error_and_is_retried(lab, monitoring, make_config):
    from lab.core import free_port

    port = monitoring.MONITORING_SSH_PORT
    config = make_config("web-unreachable")
    monitoring.MONITORING_SSH_PORT = free_port()
    run = run_pass()
    assert run.status == ProvisioningRun.Status.FAILED
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.ERROR
    assert "cannot reach 127.0.0.1" in config.sync_error

    monitoring.MONITORING_SSH_PORT = port
    assert tasks.provisioning_periodic() == ProvisioningRun.Status.CHANGED
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.SYNCED and config.sync_error == ""
    assert "vmautoscale-web-unreachable" in groups(monitoring)


def _reload_timestamps(settings):
    import requests

    values = {}
    for name, url in (("prometheus", settings.PROMETHEUS_URL), ("alertmanager", settings.ALERTMANAGER_URL)):
        for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(f"{name}_config_last_reload_success_timestamp_seconds "):
                values[name] = line.split()[1]
    return values


def test_a_pass_with_no_change_performs_zero_reloads(lab, monitoring, make_config):
    make_config("web-steady-a")
    make_config("web-steady-b", metric="memory")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    before = _reload_timestamps(monitoring)
    mtime = Path(monitoring.PROMETHEUS_RULES_FILE).stat().st_mtime_ns
    time.sleep(1.1)  # reload timestamps have a resolution of one second

    run = run_pass()
    assert run.status == ProvisioningRun.Status.UNCHANGED, run.error
    assert run.reloads == [] and run.changed_files == [] and run.jenkins_changes == []
    assert _reload_timestamps(monitoring) == before
    assert Path(monitoring.PROMETHEUS_RULES_FILE).stat().st_mtime_ns == mtime


def test_a_hand_edit_is_reported_by_check_and_repaired_by_the_next_pass(lab, monitoring, make_config, capsys):
    make_config("web-drift", threshold=90)
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    call_command("sync_autoscaling", "--check")  # in step: no SystemExit

    rules_file = Path(monitoring.PROMETHEUS_RULES_FILE)
    pushed = rules_file.read_text()
    rules_file.write_text(pushed.replace("> 90", "> 99"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        call_command("sync_autoscaling", "--check")
    assert exit_info.value.code == 1
    output = capsys.readouterr().out
    removed = [line for line in output.splitlines() if line.startswith("-") and "expr:" in line]
    added = [line for line in output.splitlines() if line.startswith("+") and "expr:" in line]
    assert len(removed) == 1 and removed[0].endswith('> 99"')
    assert len(added) == 1 and added[0].endswith('> 90"')
    assert f"changed on the host since the last push: {rules_file}" in output
    assert rules_file.read_text().count("> 99") == 1  # --check changed nothing

    run = tasks.provisioning_periodic()
    assert run == ProvisioningRun.Status.CHANGED
    last = ProvisioningRun.objects.filter(check_only=False).order_by("-id").first()
    assert str(rules_file) in last.drift
    assert rules_file.read_text() == pushed
    assert "> 90" in groups(monitoring)["vmautoscale-web-drift"].rules[0].expr


def test_a_jenkins_job_edited_by_hand_is_repaired(lab, monitoring, make_config):
    make_config("web-jobdrift")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    client = jenkins(monitoring)
    xml = client.job_config("vmautoscale-web-jobdrift")
    client.create_or_update_job(
        "vmautoscale-web-jobdrift", xml.replace("<sandbox>true</sandbox>", "<sandbox>false</sandbox>")
    )
    run = run_pass()
    assert {"job": "vmautoscale-web-jobdrift", "action": "update"} in run.jenkins_changes
    assert "jenkins job vmautoscale-web-jobdrift" in run.drift
    assert "<sandbox>true</sandbox>" in client.job_config("vmautoscale-web-jobdrift")


def test_jenkins_down_is_shown_on_the_configs_and_the_host_is_still_provisioned(lab, monitoring, make_config):
    from lab.core import free_port

    url = monitoring.JENKINS_URL
    config = make_config("web-nojenkins")
    monitoring.JENKINS_URL = f"http://127.0.0.1:{free_port()}/"
    run = run_pass()
    assert run.status == ProvisioningRun.Status.FAILED
    assert "vmautoscale-web-nojenkins" in groups(monitoring)
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.ERROR
    assert config.sync_error.startswith("Jenkins: ") and "127.0.0.1" in config.sync_error

    monitoring.JENKINS_URL = url
    assert run_pass().jenkins_changes == [{"job": "vmautoscale-web-nojenkins", "action": "create"}]
    config.refresh_from_db()
    assert config.sync_state == AutoscalingConfig.SyncState.SYNCED


def test_a_job_that_differs_is_read_once_and_written_once(lab, monitoring, make_config):
    from lab.components.jenkins import JenkinsStandinControl

    control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
    config_path = "/job/vmautoscale-web-readonce/config.xml"
    make_config("web-readonce")
    control.reset()
    assert {"job": "vmautoscale-web-readonce", "action": "create"} in run_pass().jenkins_changes
    assert len(control.calls(path_contains=config_path, method="GET")) == 1
    assert len(control.calls(path_contains="/createItem", method="POST")) == 1

    client = jenkins(monitoring)
    xml = client.job_config("vmautoscale-web-readonce")
    client.update_job("vmautoscale-web-readonce", xml.replace("<sandbox>true</sandbox>", "<sandbox>false</sandbox>"))
    control.reset()
    assert {"job": "vmautoscale-web-readonce", "action": "update"} in run_pass().jenkins_changes
    assert len(control.calls(path_contains=config_path, method="GET")) == 1
    assert len(control.calls(path_contains=config_path, method="POST")) == 1
    assert "<sandbox>true</sandbox>" in client.job_config("vmautoscale-web-readonce")


def test_a_pass_killed_in_flight_is_taken_over_at_once_and_its_successor_reloads(lab, monitoring, make_config):
    import os
    import subprocess
    from datetime import timedelta

    from django.utils import timezone

    from autoscaling.models import ProvisioningState

    make_config("web-killed")
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    # A pass killed in flight (maybe between swapping its files in and reloading): its run left running, the lease
    # held for two more minutes by its process, which is gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = ProvisioningRun.objects.create(reason="killed", status=ProvisioningRun.Status.RUNNING)
    held = {"lease_expires_at": timezone.now() + timedelta(seconds=services.LEASE_SECONDS)}
    space = services._process_space()
    ProvisioningState.objects.filter(pk=1).update(lease_owner=f"{space}:{gone.pid}:killed", **held)

    started = time.monotonic()
    run = services.provisioning_run(reason="test", wait=5)
    assert time.monotonic() - started < 5  # taken over at once, not after the lease's two minutes
    assert run.status == ProvisioningRun.Status.UNCHANGED, run.error
    assert sorted(run.reloads) == ["alertmanager", "prometheus"]  # the files match; reloaded to be sure
    dead.refresh_from_db()
    assert dead.status == ProvisioningRun.Status.FAILED and "Interrupted" in dead.error and dead.finished_at
    assert run_pass().reloads == []  # and only that once

    # A holder that still runs keeps its lease, and one of another machine is never judged from here.
    for holder in (f"{space}:{os.getpid()}:alive", f"other.4026531836:{gone.pid}:elsewhere"):
        ProvisioningState.objects.filter(pk=1).update(lease_owner=holder, **held)
        assert services.provisioning_run(reason="test", wait=0.5).status == ProvisioningRun.Status.QUEUED
    ProvisioningState.objects.filter(pk=1).update(lease_owner="", lease_expires_at=None)


def _host_files(settings):
    """path -> (inode, mtime) of every managed file and of their directories: any write, rename or removal on the
    host changes one of them."""
    paths = [settings.PROMETHEUS_RULES_FILE, settings.PROMETHEUS_CONFIG_FILE, settings.ALERTMANAGER_CONFIG_FILE]
    targets = Path(settings.PROMETHEUS_TARGETS_DIR)
    paths += [targets, *targets.iterdir()]
    paths += {Path(path).parent for path in paths}
    return {str(path): (Path(path).stat().st_ino, Path(path).stat().st_mtime_ns) for path in paths}


def test_a_no_change_pass_writes_nothing_and_its_round_trips_do_not_grow_with_the_services(
    lab, monitoring, make_config
):
    from lab.components.jenkins import JenkinsStandinControl

    control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
    costs = {}
    made = 0
    for count in (2, 12):
        for n in range(made, count):
            make_config(f"web-flat-{n:02d}", metric="memory" if n % 2 else "cpu")
        made = count
        assert run_pass().status == ProvisioningRun.Status.CHANGED
        for full_check in (False, True):
            before = _host_files(monitoring)
            time.sleep(0.01)  # a write now would show in the mtimes
            control.reset()
            run = services.provisioning_run(reason="test", full_check=full_check)
            assert run.status == ProvisioningRun.Status.UNCHANGED, run.error
            assert run.changed_files == [] and run.jenkins_changes == [] and run.reloads == []
            assert _host_files(monitoring) == before
            calls = control.calls()
            assert [call for call in calls if call["method"] != "GET"] == []  # no Jenkins write
            reads = [call for call in calls if call["path"].endswith("/config.xml")]
            costs[count, full_check] = (run.ssh_round_trips, len(calls), len(reads))
    # The host: connect and one command, whatever the number of services.
    assert {cost[0] for cost in costs.values()} == {2}, costs
    # Jenkins: no request after a save; the periodic pass reads each job once (Jenkins has no bulk read of configs).
    assert costs[2, False][1] == costs[12, False][1] == 0, costs
    assert (costs[2, True][2], costs[12, True][2]) == (2, 12), costs


def test_a_threshold_change_neither_reads_nor_parses_the_unchanged_shared_files(
    lab, monitoring, make_config, monkeypatch
):
    from autoscaling import rendering

    config = make_config("web-onlyrules", threshold=80)
    assert run_pass().status == ProvisioningRun.Status.CHANGED
    services.config_update(config=config, data={"threshold": 85})

    def refuse(*args, **kwargs):
        raise AssertionError("an unchanged shared file was parsed")

    monkeypatch.setattr(rendering, "alertmanager_config_text", refuse)
    monkeypatch.setattr(rendering, "prometheus_config_text", refuse)
    run = run_pass()
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    assert run.changed_files == [{"path": monitoring.PROMETHEUS_RULES_FILE, "action": "update"}]
    assert '> 85"' in Path(monitoring.PROMETHEUS_RULES_FILE).read_text()

    # Edited by hand, alertmanager.yml is read again (and repaired) although its inputs did not change.
    monkeypatch.undo()
    am_file = Path(monitoring.ALERTMANAGER_CONFIG_FILE)
    pushed = am_file.read_text()
    am_file.write_text(pushed.replace("vmautoscale-web-onlyrules", "vmautoscale-web-renamed"))
    run = run_pass()
    assert run.changed_files == [{"path": monitoring.ALERTMANAGER_CONFIG_FILE, "action": "update"}], run.error
    assert am_file.read_text() == pushed
