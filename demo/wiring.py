"""The lab's side of the demo: what only the local lab needs for a service to scale out for real.

The metrics stand-in plays the service's VMs, the VM agent "boots" the node exporters of new VMs, the F5 stand-in
holds the pool and the Jenkins stand-in runs the Jenkinsfile. Tests and benchmarks use these for their own services.
"""

import contextlib
import socket

from lab.components.f5 import F5StandinControl
from lab.components.jenkins import JenkinsStandinControl
from lab.components.metrics import client
from lab.core import pid_alive
from lab.standins.pipeline_runner import lab_behaviour

# Short timeouts for the lab's pipeline agent: the simulator answers at once.
AGENT_ENV = {"GUEST_IP_TIMEOUT": "10", "F5_HEALTH_TIMEOUT": "20", "VM_TASK_TIMEOUT": "60", "POLL_INTERVAL": "0.1"}
VM_AGENT = "vm-agent"


def lab_metrics(lab):
    return client(lab)


def lab_vm_agent_ensure(lab, *, networks):
    """Start the VM agent for these networks unless one runs (its pid is kept in the lab's run dir)."""
    pid_file = lab.run_dir / f"{VM_AGENT}.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        if pid_alive(pid) and pid_file.read_text().split()[1:] == sorted(networks):
            return pid
    prometheus = lab.info("prometheus")
    metrics = lab.info("metrics")
    argv = ["--metrics-url", metrics["url"], "--targets-dir", prometheus["targets_dir"]]
    argv += ["--vm-port", str(metrics["vm_port"])]
    for network in sorted(networks):
        argv += ["--network", network]
    pid = lab.spawn(VM_AGENT, lab.python_argv("lab.standins.vm_agent", *argv))
    pid_file.write_text(" ".join([str(pid), *sorted(networks)]) + "\n")
    return pid


def lab_pipeline_prepare(lab, *, job, f5_pool, agent_env=None):
    """The F5 pool exists in the F5 stand-in and the Jenkins stand-in runs the Jenkinsfile for `job`."""
    F5StandinControl(lab.info("f5")["control_url"]).create_pool(f5_pool)
    behaviour = lab_behaviour(lab, env={**AGENT_ENV, **(agent_env or {})})
    JenkinsStandinControl(lab.info("jenkins")["control_url"]).set_build_behaviour(job=job, reset=True, **behaviour)


def lab_addresses_taken(lab, *, addresses, service):
    """Those of `addresses` whose VM port (9100) another program holds, e.g. another lab's metrics stand-in.

    An address where this lab's stand-in already plays a VM of `service` (the demo seeded before) is not taken.
    """
    vm_port = lab.info("metrics")["vm_port"]
    ours = {vm["address"] for vm in lab_metrics(lab).state()["vms"] if vm["service"] == service}
    taken = []
    for address in addresses:
        if address in ours:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, vm_port))
            except OSError:
                taken.append(f"{address}:{vm_port}")
    return taken
