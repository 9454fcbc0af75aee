"""A real Prometheus holding a recorded series, for the replay's tests and benchmark.

The series is written as OpenMetrics and backfilled with `promtool tsdb create-blocks-from openmetrics` (measured
here: 30 days of 1-minute samples of 4 series in ~2 s with `--max-block-duration=720h`; with the default 2-hour
blocks the same data takes minutes), then a Prometheus of its own serves the blocks on a free loopback port. Its
retention is long, or the 30-day-old blocks would be deleted at start.
"""

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from lab.core import free_port

CPU_METRIC = "replay_cpu_percent"


def cpu_expression(service):
    """The per-VM average a config with this custom expression alerts on."""
    return f'avg by (service) ({CPU_METRIC}{{service="{service}"}})'


def openmetrics(*, service, per_vm):
    """OpenMetrics text: for each VM name, its [(unix ts, CPU %)]; an `up` sample beside every value (the count the
    replay reads). A NaN value writes no sample at all (a scrape gap)."""
    lines = [f"# TYPE {CPU_METRIC} gauge"]
    for vm, points in per_vm.items():
        lines += [
            f'{CPU_METRIC}{{service="{service}",instance="{vm}"}} {value:.4f} {ts:.0f}'
            for ts, value in points
            if value == value
        ]
    lines.append("# TYPE up gauge")
    for vm, points in per_vm.items():
        lines += [f'up{{service="{service}",instance="{vm}"}} 1 {ts:.0f}' for ts, value in points if value == value]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def backfilled_prometheus(text):
    """The URL of a Prometheus serving the OpenMetrics `text`; stopped (only it) and its files removed after."""
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not promtool or not prometheus:
        raise RuntimeError("prometheus and promtool are needed: apt-get install -y prometheus")
    base = Path(tempfile.mkdtemp(prefix="replay-prom-"))
    process = None
    try:
        (base / "data.om").write_text(text)
        data = base / "data"
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=720h", "data.om", str(data)],
            cwd=base,
            check=True,
            capture_output=True,
            timeout=300,
        )
        (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=3650d",
                "--query.lookback-delta=1m30s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(base / "prometheus.log").open("w"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not start: {(base / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(base, ignore_errors=True)
