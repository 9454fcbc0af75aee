"""The lab's side of the demo: what only the local lab needs for a service to scale out for real.

The metrics stand-in plays the service's seeded VMs, the F5 stand-in holds its pool and the Jenkins stand-in runs the
Jenkinsfile for its job. Tests and benchmarks use these for their own services. What serves every service of the
lab alike (the pipeline for every job, the VM agent that boots new VMs' node exporters) is lab/wiring.py.
"""

import socket

from lab.components.f5 import F5StandinControl
from lab.components.jenkins import JenkinsStandinControl
from lab.components.metrics import client
from lab.wiring import pipeline_behaviour


def lab_metrics(lab):
    return client(lab)


def lab_pipeline_prepare(lab, *, job, f5_pool, agent_env=None):
    """The F5 pool exists in the F5 stand-in and the Jenkins stand-in runs the Jenkinsfile for `job`."""
    F5StandinControl(lab.info("f5")["control_url"]).create_pool(f5_pool)
    behaviour = pipeline_behaviour(lab, env=agent_env)
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
