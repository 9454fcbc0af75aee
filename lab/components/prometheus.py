"""Real Prometheus (lifecycle API on, 1 s scrape and evaluation) whose files live on the monitoring host.

Layout under lab.host_dir/prometheus: prometheus.yml, rules/*.yml (the portal manages vmautoscale.rules.yml; temp
files must end in .tmp so the glob never loads them), targets/ (the portal's file_sd target files). The initial
prometheus.yml scrapes only Prometheus and Alertmanager: the portal adds its own file_sd job for the services' VMs.
"""

import contextlib
import shutil

import yaml

from lab.core import LabError, free_port

NAME = "prometheus"
REQUIRES = ("alertmanager",)

RULES_FILE_NAME = "vmautoscale.rules.yml"

INITIAL_CONFIG = """\
# Prometheus of the lab's monitoring host. The VM Autoscale portal adds a file_sd scrape job for the services'
# VMs (targets in {targets}) and manages {rules_file}.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am_port}"]
rule_files:
  - "{rules_dir}/*.yml"
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: alertmanager
    static_configs:
      - targets: ["127.0.0.1:{am_port}"]
"""


def paths(lab):
    base = lab.host_dir / "prometheus"
    return {
        "config_file": base / "prometheus.yml",
        "rules_dir": base / "rules",
        "rules_file": base / "rules" / RULES_FILE_NAME,
        "targets_dir": base / "targets",
    }


def _write_config(files, *, port, am_port):
    """Write the initial config, or, when a previous start left one, point it at this start's ports only."""
    config = files["config_file"]
    current = None
    if config.is_file():
        with contextlib.suppress(yaml.YAMLError):
            current = yaml.safe_load(config.read_text())
    if not isinstance(current, dict):
        config.write_text(
            INITIAL_CONFIG.format(
                port=port,
                am_port=am_port,
                rules_dir=files["rules_dir"],
                rules_file=files["rules_file"],
                targets=files["targets_dir"],
            )
        )
        return
    current["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    own = {"prometheus": port, "alertmanager": am_port}
    for job in current.get("scrape_configs") or []:
        if job.get("job_name") in own:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{own[job['job_name']]}"]}]
    config.write_text(yaml.safe_dump(current, sort_keys=False))


def start(lab):
    binary = shutil.which("prometheus")
    if not binary:
        raise LabError("lab: prometheus is not installed; run: apt-get install -y prometheus")
    promtool = shutil.which("promtool") or "promtool"
    am = lab.info("alertmanager")
    files = paths(lab)
    files["rules_dir"].mkdir(parents=True, exist_ok=True)
    files["targets_dir"].mkdir(parents=True, exist_ok=True)
    data = lab.run_dir / "prometheus" / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    _write_config(files, port=port, am_port=am["port"])
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={files['config_file']}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--web.enable-lifecycle",
        "--rules.alert.resend-delay=2s",
        "--storage.tsdb.retention.time=2d",
    ]
    pid = lab.spawn(NAME, argv)
    lab.wait_http(NAME, f"{url}/-/ready", pid=pid, accept=lambda status: status == 200)
    return {
        "pids": [pid],
        "url": url,
        "port": port,
        "config_file": str(files["config_file"]),
        "rules_dir": str(files["rules_dir"]),
        "rules_file": str(files["rules_file"]),
        "targets_dir": str(files["targets_dir"]),
        "promtool": promtool,
        "health_url": f"{url}/-/ready",
        "summary": f"{url} config {files['config_file']}",
        "env": {
            "PROMETHEUS_URL": url,
            "PROMETHEUS_CONFIG_FILE": str(files["config_file"]),
            "PROMETHEUS_RULES_FILE": str(files["rules_file"]),
            "PROMETHEUS_TARGETS_DIR": str(files["targets_dir"]),
            "PROMTOOL_PATH": promtool,
            # 1 s scrapes: a 5 s window shows a load change within ~2 s (the 1m default would take a minute).
            "AUTOSCALE_RATE_WINDOW": "5s",
            # The portal's own /metrics (13 queries a scrape): every 5 s is quick enough for its alerts in the lab.
            "PORTAL_SCRAPE_INTERVAL": "5s",
        },
    }
