"""Real Alertmanager (clustering off) whose alertmanager.yml lives on the monitoring host (lab.host_dir).

The initial config routes everything to a `null` receiver; the portal adds one child route and webhook receiver
per service under `route.routes`. Short group timings keep the lab fast (a new group notifies after ~1 s).
"""

import shutil

from lab.core import LabError, free_port

NAME = "alertmanager"
REQUIRES = ()

INITIAL_CONFIG = """\
# Alertmanager of the lab's monitoring host. The VM Autoscale portal manages the child routes under
# route.routes and the receivers named vmautoscale-*; everything else here is left as it is.
global:
  resolve_timeout: 5m
route:
  receiver: "null"
  group_by: ["alertname", "service"]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
  routes: []
receivers:
  - name: "null"
"""


def config_file(lab):
    return lab.host_dir / "alertmanager" / "alertmanager.yml"


def start(lab):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not binary:
        raise LabError("lab: prometheus-alertmanager is not installed; run: apt-get install -y prometheus-alertmanager")
    amtool = shutil.which("amtool") or "amtool"
    config = config_file(lab)
    config.parent.mkdir(parents=True, exist_ok=True)
    if not config.exists():
        config.write_text(INITIAL_CONFIG)
    data = lab.run_dir / "alertmanager" / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",
    ]
    pid = lab.spawn(NAME, argv)
    lab.wait_http(NAME, f"{url}/-/ready", pid=pid, accept=lambda status: status == 200)
    return {
        "pids": [pid],
        "url": url,
        "port": port,
        "config_file": str(config),
        "amtool": amtool,
        "health_url": f"{url}/-/ready",
        "summary": f"{url} config {config}",
        "env": {
            "ALERTMANAGER_URL": url,
            "ALERTMANAGER_CONFIG_FILE": str(config),
            "AMTOOL_PATH": amtool,
        },
    }
