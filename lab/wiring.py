"""What makes every service the portal provisions work in the lab, not only the demo's.

In production a service's Jenkins job runs the pipeline on a Jenkins agent and its VMs run node_exporter. In the
lab, `every_service_wire(lab)` (run by `python -m lab up`, hence `make run`) makes:
- the Jenkins stand-in run the real pipeline (each job's embedded Jenkinsfile, the step commands of pipeline/)
  against the vCenter simulator and the F5 stand-in, for every job, including the ones created later;
- the VM agent (lab/standins/vm_agent.py) "boot" a node exporter in the metrics stand-in for every scrape target
  the portal writes on a lab address: the monitored instances of any config and each clone once it runs.
A service's F5 pool is the operator's to create, as on a real BIG-IP (docs/user-guide.md shows how in the lab).
"""

import contextlib
import os

from lab.components.jenkins import JenkinsStandinControl
from lab.core import pid_alive, stop_groups
from lab.networks import NETWORKS_ENV
from lab.standins.pipeline_runner import lab_behaviour

# Every lab address: the VM agent boots a node exporter for each target of any service on one of them.
LAB_NETWORK = "127.0.0.0/8"
# A test session narrows that to its own networks (lab/pytest_plugin.py): the VMs of targets at fixed addresses that
# its tests leave in its lab (e.g. 127.0.0.1:9100) then never take a listener that another session needs.
# Short timeouts for the lab's pipeline agent: the simulator answers at once.
AGENT_ENV = {"GUEST_IP_TIMEOUT": "10", "F5_HEALTH_TIMEOUT": "20", "VM_TASK_TIMEOUT": "60", "POLL_INTERVAL": "0.1"}
VM_AGENT = "vm-agent"


def agent_networks():
    """The networks the lab's VM agent follows unless told others: $LAB_VM_NETWORKS (comma-separated), else all of
    the lab's addresses."""
    return [n.strip() for n in os.environ.get(NETWORKS_ENV, "").split(",") if n.strip()] or [LAB_NETWORK]


def vm_agent_ensure(lab, *, networks=None):
    """Start the VM agent for these networks (default: `agent_networks()`) unless one runs for them (pid and
    networks are kept in the run dir); one running for other networks is stopped first, so no two agents follow the
    same targets."""
    networks = sorted(str(n) for n in (networks or agent_networks()))
    pid_file = lab.run_dir / f"{VM_AGENT}.pid"
    with contextlib.suppress(OSError, ValueError):
        pid, *running = pid_file.read_text().split()
        if pid_alive(int(pid)):
            if running == networks:
                return int(pid)
            stop_groups({int(pid): VM_AGENT})
    prometheus = lab.info("prometheus")
    metrics = lab.info("metrics")
    argv = ["--metrics-url", metrics["url"], "--targets-dir", prometheus["targets_dir"]]
    argv += ["--vm-port", str(metrics["vm_port"])]
    for network in networks:
        argv += ["--network", network]
    pid = lab.spawn(VM_AGENT, lab.python_argv("lab.standins.vm_agent", *argv))
    pid_file.write_text(" ".join([str(pid), *networks]) + "\n")
    return pid


def pipeline_behaviour(lab, **extra):
    """The Jenkins stand-in behaviour that runs the Jenkinsfile against this lab, with the lab agent's timeouts."""
    return lab_behaviour(lab, env={**AGENT_ENV, **(extra.pop("env", None) or {})}, **extra)


def every_service_wire(lab, *, networks=None):
    """Every job's builds run the pipeline; every lab address's scrape target gets a node exporter.

    Jobs that have a behaviour of their own (a test's) keep it. Returns the VM agent's pid.
    """
    JenkinsStandinControl(lab.info("jenkins")["control_url"]).set_build_behaviour(**pipeline_behaviour(lab))
    return vm_agent_ensure(lab, networks=networks)
