"""Benchmark of the monitoring side on the lab's real programs (loopback only, ~30 s).

Figures: lab start-up of metrics/alertmanager/prometheus/sshd; SSH connect+auth; a Prometheus rule push the
portal's way (write .tmp, promtool on the host, rename, reload, visible in /api/v1/rules) with its SSH round trips;
an Alertmanager config push (write .tmp, amtool, rename, reload); and a service's load raised on the metrics
stand-in until Alertmanager's webhook arrives (rate window 5s, `for: 2s`).

Run: .venv/bin/python benchmarks/bench_monitoring.py
"""

import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integrations.alertmanager import AlertmanagerClient
from integrations.prometheus import PrometheusClient
from integrations.ssh import SshClient, SshTarget
from lab.core import Lab
from lab.standins.metrics import MetricsStandinClient, random_loopback_network

COMPONENTS = ["metrics", "alertmanager", "prometheus", "sshd"]
REPEAT = 5
SERVICE = "bench"
RULES = """\
groups:
  - name: vmautoscale
    rules:
      - alert: VmAutoscaleHighCpu
        expr: 100 - avg by (service) (rate(node_cpu_seconds_total{{mode="idle"}}[5s])) * 100 > {threshold}
        for: 2s
        labels:
          service: {service}
"""


def median_ms(samples):
    return f"{statistics.median(samples) * 1000:.0f} ms (min {min(samples) * 1000:.0f}, max {max(samples) * 1000:.0f})"


def receiver():
    received = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.put((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def push(ssh, path, text, validate):
    ssh.write_file(f"{path}.tmp", text)
    result = ssh.run([*validate, f"{path}.tmp"])
    if result.exit_status != 0:
        raise SystemExit(f"validation failed: {result.stdout}{result.stderr}")
    ssh.rename(f"{path}.tmp", path)


def main():
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as run_dir:
        lab = Lab(run_dir)
        try:
            started = time.monotonic()
            lab.up(COMPONENTS)
            print(f"lab start ({', '.join(COMPONENTS)}): {(time.monotonic() - started) * 1000:.0f} ms")
            run(lab)
        finally:
            lab.stop()


def run(lab):
    sshd, prom, am = lab.info("sshd"), lab.info("prometheus"), lab.info("alertmanager")
    target = SshTarget(sshd["host"], sshd["port"], sshd["user"], sshd["key_file"], sshd["known_hosts"])
    prometheus, alertmanager = PrometheusClient(prom["url"]), AlertmanagerClient(am["url"])

    connects = []
    for _ in range(10):
        started = time.monotonic()
        with SshClient(target) as ssh:
            connects.append(time.monotonic() - started)
    print(f"ssh connect+auth: {median_ms(connects)}")

    pushes, trips = [], []
    for attempt in range(REPEAT):
        started = time.monotonic()
        with SshClient(target) as ssh:
            push(
                ssh,
                prom["rules_file"],
                RULES.format(threshold=70 + attempt, service=SERVICE),
                [prom["promtool"], "check", "rules"],
            )
            prometheus.reload()
            trips.append(ssh.round_trips)
        rule = prometheus.rules()[0].rules[0]
        assert rule.expr.endswith(f"> {70 + attempt}"), rule.expr
        pushes.append(time.monotonic() - started)
    print(
        f"prometheus rule push (connect, write, promtool, rename, reload, visible): {median_ms(pushes)}, "
        f"{trips[0]} ssh round trips"
    )

    server, received = receiver()
    config = yaml.safe_load(Path(am["config_file"]).read_text())
    config["route"]["routes"] = [{"receiver": "bench", "matchers": [f'service="{SERVICE}"']}]
    config["receivers"].append(
        {
            "name": "bench",
            "webhook_configs": [
                {"url": f"http://127.0.0.1:{server.server_address[1]}/api/webhook/autoscale/{SERVICE}"}
            ],
        }
    )
    text = yaml.safe_dump(config, sort_keys=False)
    am_pushes = []
    for _ in range(REPEAT):
        started = time.monotonic()
        with SshClient(target) as ssh:
            push(ssh, am["config_file"], text, [am["amtool"], "check-config"])
            alertmanager.reload()
        am_pushes.append(time.monotonic() - started)
    print(f"alertmanager config push (connect, write, amtool, rename, reload): {median_ms(am_pushes)}")

    # Load -> alert -> webhook through the metrics stand-in and a file_sd job, as in production.
    metrics = MetricsStandinClient(lab.info("metrics")["url"])
    address = str(random_loopback_network()[10])
    metrics.register_vm(address, SERVICE)
    metrics.set_load(SERVICE, cpu_percent=10)
    targets = Path(prom["targets_dir"]) / "bench.json"
    targets.write_text(
        json.dumps([{"targets": [f"{address}:{lab.info('metrics')['vm_port']}"], "labels": {"service": SERVICE}}])
    )
    prom_config = yaml.safe_load(Path(prom["config_file"]).read_text())
    prom_config["scrape_configs"].append(
        {"job_name": "vmautoscale", "file_sd_configs": [{"files": [f"{prom['targets_dir']}/*.json"]}]}
    )
    Path(prom["config_file"]).write_text(yaml.safe_dump(prom_config, sort_keys=False))
    prometheus.reload()
    time.sleep(7)  # the rate window fills, and Prometheus knows Alertmanager again after the reload
    started = time.monotonic()
    metrics.set_load(SERVICE, cpu_percent=90)
    arrived, body = received.get(timeout=30)
    print(
        f"load 10% -> 90% until the webhook arrives (rate[5s], for: 2s, group_wait 1s): "
        f"{(arrived - started):.2f} s, alerts {[a['labels']['alertname'] for a in body['alerts']]}"
    )
    server.shutdown()


if __name__ == "__main__":
    main()
