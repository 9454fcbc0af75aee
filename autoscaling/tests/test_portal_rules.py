"""The portal watching itself: its own alert rules (promtool checks and unit-tests them), their labels from
PORTAL_ALERT_LABELS, and the scrape job of its /metrics in prometheus.yml."""

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autoscaling import rendering
from autoscaling.rendering import RenderContext, RenderError
from vmautoscale.config import ConfigError, Settings

UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "portal-rules.test.yml"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations-guide.md"
CTX = RenderContext(
    portal_url="https://portal.example.internal",
    webhook_token="webhook-secret",
    prometheus_config_file="/etc/prometheus/prometheus.yml",
    rules_file="/etc/prometheus/rules/vmautoscale.rules.yml",
    targets_dir="/etc/prometheus/targets/vmautoscale",
    portal_rules_file="/etc/prometheus/rules/vmautoscale-portal.rules.yml",
    metrics_token="metrics-secret",
    alert_labels=(("", "team", "ops"), ("VmautoscaleOrphansFound", "severity", "info")),
)


def promtool(*args, cwd=None):
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/install-system-deps.sh"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_the_rules_pass_promtool_check_and_its_unit_tests(tmp_path):
    rules = tmp_path / rendering.PORTAL_RULES_FILE_NAME
    rules.write_text(rendering.portal_rules_text(CTX))
    check = promtool("check", "rules", "--lint-fatal", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rendering.PORTAL_ALERTS)} rules found" in check.stdout

    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert has a case that expects it to fire.
    tested = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == rendering.PORTAL_ALERT_NAMES


def test_the_unit_tests_fail_when_a_rule_breaks(tmp_path):
    """The unit tests can fail: without `max without (instance)` two scraped instances make two alerts."""
    text = rendering.portal_rules_text(CTX)
    series = 'vmautoscale_scaling_last_failure_timestamp_seconds{action=\\"scale_out\\"}'
    aggregated = f"max without (instance) ({series})"
    assert aggregated in text
    (tmp_path / rendering.PORTAL_RULES_FILE_NAME).write_text(text.replace(aggregated, series))
    assert promtool("check", "rules", str(tmp_path / rendering.PORTAL_RULES_FILE_NAME)).returncode == 0
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 1 and "alertname: VmautoscaleScaleOutFailed" in result.stdout + result.stderr


def test_labels_come_from_the_settings_and_the_portal_keeps_its_own():
    group = rendering.portal_rule_group(CTX)
    assert group["name"] == "vmautoscale-portal"
    labels = {rule["alert"]: rule["labels"] for rule in group["rules"]}
    assert labels["VmautoscaleScaleOutFailed"] == {
        "severity": "warning",
        "team": "ops",
        "managed_by": "vmautoscale",
        "portal_alert": "true",
    }
    assert labels["VmautoscaleOrphansFound"]["severity"] == "info"
    assert labels["VmautoscaleBreakerOpen"]["severity"] == "critical"
    # Never the label that routes an alert to a service's autoscale webhook.
    assert all("autoscale" not in rule_labels for rule_labels in labels.values())

    for bad in [(("", "autoscale", "true"),), (("", "portal_alert", "no"),), (("VmautoscaleNoSuch", "team", "x"),)]:
        with pytest.raises(RenderError):
            rendering.portal_rules_text(dataclasses.replace(CTX, alert_labels=bad))

    off = rendering.portal_rules_text(dataclasses.replace(CTX, portal_alert_rules=False))
    assert yaml.safe_load(off) == {"groups": []}


def test_portal_alert_labels_setting(monkeypatch):
    monkeypatch.setenv("PORTAL_ALERT_LABELS", '{"team": "ops", "VmautoscalePortalDown": {"severity": "page"}}')
    assert Settings().labels("PORTAL_ALERT_LABELS", ()) == (
        ("", "team", "ops"),
        ("VmautoscalePortalDown", "severity", "page"),
    )
    for raw in ["team=ops", '["team"]', '{"te am": "x"}', '{"team": 1}', '{"__name__": "x"}']:
        monkeypatch.setenv("PORTAL_ALERT_LABELS", raw)
        with pytest.raises(ConfigError, match="PORTAL_ALERT_LABELS"):
            Settings().labels("PORTAL_ALERT_LABELS", ())
    monkeypatch.setenv("PORTAL_ALERT_LABELS", "")
    assert Settings().labels("PORTAL_ALERT_LABELS", ()) == ()


def _jobs(text):
    return {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}


def test_prometheus_yml_gets_the_portal_job_and_rule_file():
    current = "global:\n  scrape_interval: 30s\nrule_files:\n  - rules/vmautoscale.rules.yml\nscrape_configs: []\n"
    text = rendering.prometheus_config_text(current, CTX)
    job = _jobs(text)["vmautoscale-portal"]
    assert job == {
        "job_name": "vmautoscale-portal",
        "scheme": "https",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": ["portal.example.internal:443"]}],
        "authorization": {"type": "Bearer", "credentials": "metrics-secret"},
    }
    assert yaml.safe_load(text)["rule_files"] == ["rules/vmautoscale.rules.yml", CTX.portal_rules_file]
    assert rendering.prometheus_config_text(text, CTX) == text  # in step: unchanged
    assert "metrics-secret" not in rendering.shown(text, CTX)

    # The address follows the settings; what an operator added to the job (interval, TLS, a token file) stays.
    doc = yaml.safe_load(text)
    doc["scrape_configs"][-1].update(
        scrape_interval="15s", tls_config={"ca_file": "/etc/ssl/ca.crt"}, authorization={"credentials_file": "/t"}
    )
    moved = dataclasses.replace(CTX, portal_url="http://portal2.example.internal:8000/vmautoscale")
    job = _jobs(rendering.prometheus_config_text(yaml.safe_dump(doc), moved))["vmautoscale-portal"]
    assert job["static_configs"] == [{"targets": ["portal2.example.internal:8000"]}]
    assert (job["scheme"], job["metrics_path"]) == ("http", "/vmautoscale/metrics")
    assert job["scrape_interval"] == "15s" and job["tls_config"] == {"ca_file": "/etc/ssl/ca.crt"}
    assert job["authorization"] == {"credentials_file": "/t"}

    # PORTAL_SCRAPE_INTERVAL, when set, is the job's.
    assert (
        _jobs(rendering.prometheus_config_text(current, dataclasses.replace(CTX, scrape_interval="30s")))[
            "vmautoscale-portal"
        ]["scrape_interval"]
        == "30s"
    )

    # PORTAL_METRICS_URL wins; no token, no authorization.
    direct = dataclasses.replace(CTX, metrics_url="http://10.0.0.5:8000/metrics", metrics_token="")
    job = _jobs(rendering.prometheus_config_text(current, direct))["vmautoscale-portal"]
    assert job["static_configs"] == [{"targets": ["10.0.0.5:8000"]}] and "authorization" not in job

    # PORTAL_SCRAPE_JOB off: the portal neither adds nor touches a job of that name.
    off = dataclasses.replace(CTX, portal_scrape_job=False)
    assert "vmautoscale-portal" not in _jobs(rendering.prometheus_config_text(current, off))
    hand_made = current.replace("scrape_configs: []", "scrape_configs:\n  - job_name: vmautoscale-portal\n")
    assert _jobs(rendering.prometheus_config_text(hand_made, off))["vmautoscale-portal"] == {
        "job_name": "vmautoscale-portal"
    }


def test_a_rendered_prometheus_yml_passes_promtool_check_config(tmp_path):
    (tmp_path / "rules").mkdir()
    ctx = dataclasses.replace(
        CTX,
        prometheus_config_file=str(tmp_path / "prometheus.yml"),
        rules_file=str(tmp_path / "rules" / "vmautoscale.rules.yml"),
        portal_rules_file=str(tmp_path / "rules" / rendering.PORTAL_RULES_FILE_NAME),
    )
    Path(ctx.rules_file).write_text(rendering.rules_text([], ctx))
    Path(ctx.portal_rules_file).write_text(rendering.portal_rules_text(ctx))
    config = tmp_path / "prometheus.yml"
    config.write_text(rendering.prometheus_config_text("scrape_configs: []\n", ctx))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def guide_route():
    """The alertmanager.yml example of the operations guide ("The portal watching itself")."""
    block = re.search(r"```yaml\n(route:\n  routes:\n    - receiver: ops-team\n.*?)```", GUIDE.read_text(), re.S)
    assert block, "the operations guide no longer shows the route of the portal's own alerts"
    return yaml.safe_load(block.group(1))


def amtool(*args):
    binary = shutil.which("amtool")
    assert binary, "amtool is missing: run scripts/install-system-deps.sh"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def test_the_guides_alertmanager_route_is_valid_and_routes_the_portals_alerts_to_the_team(tmp_path):
    """The operations guide's example route: amtool accepts it, the portal's alerts go to the team (the critical
    ones to its pager too), a service's autoscale alert never does, and a pass keeps it."""
    example = guide_route()
    base = {"route": {"receiver": "null", "routes": example["route"]["routes"]}, "receivers": [{"name": "null"}]}
    base["receivers"] += example["receivers"]
    web = rendering.ServiceSpec(service_name="web", enabled=True, metric="cpu", threshold=80, duration_seconds=60)
    config = tmp_path / "alertmanager.yml"
    config.write_text(rendering.alertmanager_config_text(yaml.safe_dump(base), [web], CTX))
    result = amtool("check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr

    def route(**labels):
        argv = ["config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())]
        return amtool(*argv).stdout.strip()

    for rule in rendering.portal_rule_group(dataclasses.replace(CTX, alert_labels=(("", "team", "ops"),)))["rules"]:
        labels = {"alertname": rule["alert"], **rule["labels"], "service": "web", "job": "vmautoscale-portal"}
        expected = "ops-pager,ops-team" if rule["labels"]["severity"] == "critical" else "ops-team"
        assert route(**labels) == expected, rule["alert"]
    assert route(alertname="AutoscaleHighCpu", service="web", autoscale="true") == "vmautoscale-web"
