"""integrations.prometheus against the lab's real Prometheus (files pushed over the lab's real sshd)."""

import time
import uuid

import pytest

from integrations.errors import IntegrationError
from integrations.prometheus import PrometheusClient
from integrations.ssh import SshClient, SshTarget
from lab.core import free_port

pytestmark = pytest.mark.lab

RULES = """\
groups:
  - name: {group}
    rules:
      - alert: {group}_always
        expr: vector(1) > 0
        for: 1m
        labels:
          service: {group}
        annotations:
          summary: lab test rule
      - record: {group}:up:sum
        expr: sum(up)
"""


@pytest.fixture(scope="module")
def prometheus(lab):
    info = lab.info("prometheus")
    with PrometheusClient(info["url"]) as client:
        yield info, client


@pytest.fixture(scope="module")
def ssh(lab):
    info = lab.info("sshd")
    target = SshTarget(info["host"], info["port"], info["user"], info["key_file"], info["known_hosts"])
    with SshClient(target) as client:
        yield client


@pytest.fixture
def rule_file(prometheus, ssh):
    """A fresh rule file name in the rules directory; removed (and Prometheus reloaded) afterwards."""
    info, client = prometheus
    group = f"labtest_{uuid.uuid4().hex[:8]}"
    path = f"{info['rules_dir']}/{group}.yml"
    yield group, path
    ssh.remove(path)
    ssh.remove(f"{path}.tmp")
    client.reload()


def _push(ssh, promtool, path, text):
    """The portal's way: write NAME.tmp, validate it on the host, swap it in atomically."""
    ssh.write_file(f"{path}.tmp", text)
    check = ssh.run([promtool, "check", "rules", f"{path}.tmp"])
    assert check.exit_status == 0, check.stderr
    ssh.rename(f"{path}.tmp", path)


def _groups(client):
    return {group.name: group for group in client.rules()}


def test_reloaded_rule_file_shows_up_in_rules(prometheus, ssh, rule_file):
    info, client = prometheus
    group, path = rule_file
    _push(ssh, info["promtool"], path, RULES.format(group=group))
    assert group not in _groups(client)  # rule files are not watched

    client.reload()

    loaded = _groups(client)[group]
    assert loaded.file == path and loaded.interval == 1.0
    alert, record = loaded.rules
    assert (alert.name, alert.type, alert.expr, alert.duration) == (f"{group}_always", "alerting", "vector(1) > 0", 60)
    assert alert.labels == {"service": group} and alert.annotations == {"summary": "lab test rule"}
    assert (record.name, record.type, record.expr) == (f"{group}:up:sum", "recording", "sum(up)")
    assert client.config_reload_successful()
    # Evaluated every second: the alert turns pending and shows in the alerts list.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pending = [a for a in client.alerts() if a.labels.get("alertname") == f"{group}_always"]
        if pending:
            break
        time.sleep(0.2)
    assert pending and pending[0].state == "pending" and pending[0].value == 1.0
    assert pending[0].active_at is not None


def test_rejected_reload_keeps_old_rules_and_reports_the_failure(prometheus, ssh, rule_file):
    info, client = prometheus
    group, path = rule_file
    _push(ssh, info["promtool"], path, RULES.format(group=group))
    client.reload()
    # Bypass validation on purpose: what happens when a bad file reaches Prometheus anyway.
    ssh.write_file(path, RULES.format(group=group).replace("vector(1) > 0", "vector(1 >"))

    with pytest.raises(IntegrationError) as excinfo:
        client.reload()

    error = excinfo.value
    assert error.system == "prometheus" and error.permanent and error.code == "reload_failed"
    assert "failed to reload config" in error.message
    assert client.config_reload_successful() is False
    assert _groups(client)[group].rules[0].expr == "vector(1) > 0"  # the old rules keep running
    ssh.remove(path)
    client.reload()
    assert client.config_reload_successful() is True


def _self_scrapes(client):
    series = client.query_range('up{job="prometheus"}', time.time() - 3, time.time(), 1)
    return len(series[0].values) if series else 0


def test_query_query_range_and_targets(prometheus):
    info, client = prometheus
    deadline = time.monotonic() + 10
    while _self_scrapes(client) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # a fresh lab: wait for Prometheus' first scrapes of itself
    (series,) = client.query('up{job="prometheus"}')
    assert series.labels["instance"] == f"127.0.0.1:{info['port']}" and series.value == 1.0
    assert client.query("1 + 1")[0].value == 2.0
    now = time.time()
    (ranged,) = client.query_range('up{job="prometheus"}', now - 3, now, 1)
    assert len(ranged.values) >= 2 and all(value == 1.0 for _, value in ranged.values)
    pools = {target.scrape_pool: target for target in client.targets()}
    assert pools["prometheus"].health == "up" and pools["prometheus"].last_scrape is not None


def test_bad_query_is_permanent_and_unreachable_is_not(prometheus):
    _, client = prometheus
    with pytest.raises(IntegrationError) as excinfo:
        client.query("up{")
    assert excinfo.value.permanent and "parse error" in excinfo.value.message
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=1) as down:
        with pytest.raises(IntegrationError) as excinfo:
            down.rules()
        assert not excinfo.value.permanent and excinfo.value.code == "unreachable"
        assert down.ready() is False


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("15s", 15.0),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("", None),
        ("1x", None),
        (None, None),
        ("m", None),
    ],
)
def test_parse_duration_reads_prometheus_durations(text, seconds):
    from integrations.prometheus import parse_duration

    assert parse_duration(text) == seconds
