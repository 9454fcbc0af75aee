"""Metrics stand-in for the services' VMs (lab/standins/metrics.py): node_exporter series on 127.x:9100.

The VM port is 9100 like node_exporter; set LAB_METRICS_VM_PORT to move it. Concurrent labs on one machine share
the port, so tests give their VMs random loopback addresses (`random_loopback_network()`).
"""

import os

from lab.core import free_port
from lab.standins.metrics import DEFAULT_VM_PORT, MetricsStandinClient, random_loopback_network

NAME = "metrics"
REQUIRES = ()

__all__ = ["NAME", "REQUIRES", "MetricsStandinClient", "client", "random_loopback_network", "start"]


def start(lab):
    port = free_port()
    vm_port = int(os.environ.get("LAB_METRICS_VM_PORT") or DEFAULT_VM_PORT)
    argv = lab.python_argv("lab.standins.metrics", "--control-port", port, "--vm-port", vm_port)
    pid = lab.spawn(NAME, argv)
    url = f"http://127.0.0.1:{port}"
    lab.wait_http(NAME, f"{url}/_lab/health", pid=pid, timeout=15)
    return {
        "pids": [pid],
        "url": url,
        "vm_port": vm_port,
        "health_url": f"{url}/_lab/health",
        "summary": f"control {url}/_lab/state, VMs on 127.x.y.z:{vm_port}/metrics",
        "env": {"METRICS_STANDIN_URL": url},
    }


def client(lab):
    """A control-API client of this lab's metrics stand-in (started if needed)."""
    return MetricsStandinClient(lab.info(NAME)["url"])
