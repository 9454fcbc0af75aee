"""The lab's monitoring side: promtool/amtool over SSH, the metrics stand-in scraped by the real Prometheus,
and `python -m lab up|status|down` for these components."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from integrations.prometheus import PrometheusClient
from integrations.ssh import SshClient, SshTarget
from lab.core import ROOT, pid_alive
from lab.standins.metrics import MetricsStandinClient, StandinError, random_loopback_network

pytestmark = pytest.mark.lab

MONITORING = ["metrics", "alertmanager", "prometheus", "sshd"]
CPU = '100 - avg by (service) (rate(node_cpu_seconds_total{{mode="idle",service="{service}"}}[5s])) * 100'
MEMORY = (
    "100 * (1 - avg by (service) (node_memory_MemAvailable_bytes{{service='{service}'}}"
    " / node_memory_MemTotal_bytes{{service='{service}'}}))"
)


@pytest.fixture(scope="module")
def ssh(lab):
    info = lab.info("sshd")
    target = SshTarget(info["host"], info["port"], info["user"], info["key_file"], info["known_hosts"])
    with SshClient(target) as client:
        yield client


@pytest.fixture(scope="module")
def metrics(lab):
    return MetricsStandinClient(lab.info("metrics")["url"])


def _scrape(address, port):
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_promtool_and_amtool_reject_broken_files_on_the_host(lab, ssh):
    prometheus, alertmanager = lab.info("prometheus"), lab.info("alertmanager")
    work = f"{lab.host_dir}/test-validators-{uuid.uuid4().hex[:8]}"
    ssh.makedirs(work)
    rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: {expr}\n"
    ssh.write_file(f"{work}/good.rules.yml", rules.format(expr="up == 0"))
    ssh.write_file(f"{work}/bad.rules.yml", rules.format(expr="up =="))
    ssh.write_file(f"{work}/bad-am.yml", "route:\n  receiver: missing\nreceivers:\n  - name: other\n")

    good = ssh.run([prometheus["promtool"], "check", "rules", f"{work}/good.rules.yml"])
    bad = ssh.run([prometheus["promtool"], "check", "rules", f"{work}/bad.rules.yml"])
    live_am = ssh.run([alertmanager["amtool"], "check-config", alertmanager["config_file"]])
    bad_am = ssh.run([alertmanager["amtool"], "check-config", f"{work}/bad-am.yml"])
    live_prometheus = ssh.run([prometheus["promtool"], "check", "config", prometheus["config_file"]])

    assert good.exit_status == 0, good.stderr
    assert bad.exit_status == 1 and "FAILED" in bad.stderr
    assert live_am.exit_status == 0 and live_prometheus.exit_status == 0
    assert bad_am.exit_status == 1 and "FAILED" in bad_am.stdout and "missing" in bad_am.stdout
    for name in ssh.listdir(work):
        ssh.remove(f"{work}/{name}")


def test_metrics_standin_control_api(lab, metrics):
    port = lab.info("metrics")["vm_port"]
    network = random_loopback_network()
    first, second = (str(network[n]) for n in (10, 11))
    service = f"labtest-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(StandinError) as excinfo:
            metrics.register_vm("192.0.2.1", service)
        assert excinfo.value.status == 400 and "loopback" in excinfo.value.message
        with pytest.raises(StandinError) as excinfo:
            metrics.register_vm(first, "")
        assert excinfo.value.status == 400 and "service" in excinfo.value.message

        metrics.register_vm(first, service, name="web-01")
        metrics.set_load(service, cpu_percent=150, memory_percent=50)
        assert metrics.register_vm(second, service)["cpu_percent"] == 75.0  # 150 % shared by two VMs

        t0 = time.monotonic()
        before = _scrape(first, port)
        t1 = time.monotonic()
        time.sleep(0.5)
        t2 = time.monotonic()
        after = _scrape(first, port)
        t3 = time.monotonic()
        idle = 'node_cpu_seconds_total{cpu="0",mode="idle"}'
        total = sum(after[k] - before[k] for k in after if k.startswith('node_cpu_seconds_total{cpu="0"'))
        # Counters advance in real time: one CPU-second per second over all modes, 25 % of it idle.
        assert t2 - t1 - 0.01 <= total <= t3 - t0 + 0.01
        assert (after[idle] - before[idle]) / total == pytest.approx(0.25, abs=0.01)
        assert after["node_memory_MemAvailable_bytes"] == after["node_memory_MemTotal_bytes"] * 0.75
        assert after['node_uname_info{machine="x86_64",nodename="web-01",sysname="Linux"}'] == 1

        metrics.power(second, False)
        vms = {vm["address"]: vm for vm in metrics.state()["vms"]}
        assert vms[first]["cpu_percent"] == 100.0 and vms[second]["cpu_percent"] == 0.0  # capped at one VM
        with pytest.raises(urllib.error.URLError):
            _scrape(second, port)  # a powered-off VM does not answer
        metrics.power(second, True)
        assert _scrape(second, port)[idle] < 1.0  # a boot resets the counters
    finally:
        metrics.unregister_vm(first)
        metrics.unregister_vm(second)
    with pytest.raises(urllib.error.URLError):
        _scrape(first, port)
    assert service not in {vm["service"] for vm in metrics.state()["vms"]}


@pytest.fixture
def scrape_job(lab, tmp_path):
    """A file_sd scrape job of the stand-in's VMs (as the portal adds one); removed afterwards."""
    info = lab.info("prometheus")
    client = PrometheusClient(info["url"])
    config_file = Path(info["config_file"])
    original = config_file.read_text()
    targets = tmp_path / "targets"
    targets.mkdir()
    config = yaml.safe_load(original)
    job = f"labtest-{uuid.uuid4().hex[:8]}"
    config["scrape_configs"].append({"job_name": job, "file_sd_configs": [{"files": [f"{targets}/*.json"]}]})
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    client.reload()

    def set_targets(service, addresses):
        port = lab.info("metrics")["vm_port"]
        groups = [{"targets": [f"{address}:{port}" for address in addresses], "labels": {"service": service}}]
        tmp = targets / f"{service}.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(targets / f"{service}.json")

    yield client, set_targets
    config_file.write_text(original)
    client.reload()
    client.close()


def _settle(client, service, cpu, memory, timeout=20.0):
    """Wait until Prometheus computes the service's CPU and memory near the expected values; return the last."""
    deadline = time.monotonic() + timeout
    seen = (None, None)
    while time.monotonic() < deadline:
        cpu_series = client.query(CPU.format(service=service))
        memory_series = client.query(MEMORY.format(service=service))
        seen = (cpu_series[0].value if cpu_series else None, memory_series[0].value if memory_series else None)
        if None not in seen and abs(seen[0] - cpu) < 2 and abs(seen[1] - memory) < 0.5:
            return seen
        time.sleep(0.25)
    return seen


def test_prometheus_sees_service_load_shared_by_its_vms(metrics, scrape_job):
    client, set_targets = scrape_job
    network = random_loopback_network()
    first, second = str(network[21]), str(network[22])
    service = f"labtest-{uuid.uuid4().hex[:8]}"
    try:
        metrics.register_vm(first, service)
        metrics.set_load(service, cpu_percent=80, memory_percent=60)
        set_targets(service, [first])
        cpu, memory = _settle(client, service, 80, 60)
        assert cpu == pytest.approx(80, abs=2) and memory == pytest.approx(60, abs=0.5)

        metrics.register_vm(second, service)  # scale-out: the load is shared by two VMs now
        set_targets(service, [first, second])
        cpu, memory = _settle(client, service, 40, 30)
        assert cpu == pytest.approx(40, abs=2) and memory == pytest.approx(30, abs=0.5)
    finally:
        metrics.unregister_vm(first)
        metrics.unregister_vm(second)


def _lab_command(run_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "lab", *args, "--run-dir", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _processes_mentioning(text):
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
    return found


def test_lab_command_starts_reports_and_stops_the_monitoring_side(tmp_path):
    run_dir = tmp_path / "run"
    try:
        up = _lab_command(run_dir, "up", *MONITORING)
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "state.json").read_text())["components"]
        pids = [pid for name in MONITORING for pid in state[name]["pids"]]
        assert all(pid_alive(pid) for pid in pids)
        env = dict(line.split("=", 1) for line in (run_dir / "lab.env").read_text().splitlines())
        assert env["MONITORING_SSH_PORT"] == str(state["sshd"]["port"])
        assert env["PROMETHEUS_RULES_FILE"].endswith("/host/prometheus/rules/vmautoscale.rules.yml")

        status = _lab_command(run_dir, "status")
        for name in MONITORING:
            assert re.search(rf"^{name}\s+up\s", status.stdout, re.MULTILINE), status.stdout

        down = _lab_command(run_dir, "down")
        assert down.returncode == 0, down.stderr
        assert not any(pid_alive(pid) for pid in pids)
        assert _processes_mentioning(str(run_dir)) == []
        after = _lab_command(run_dir, "status")
        assert after.returncode == 1 and re.search(r"^prometheus\s+DOWN", after.stdout, re.MULTILINE)
    finally:
        _lab_command(run_dir, "down")
