#!/usr/bin/env python3
"""One step of the scale-out pipeline (jenkins/Jenkinsfile.autoscale runs one per stage).

    autoscale_step.py vm-clone | vm-customize | vm-power-on | vm-guest-ip | f5-add | health-check
    autoscale_step.py rollback-f5 | rollback-vm | rollback-ip          (the undo, each idempotent)
    autoscale_step.py status-body running|succeeded|final              (prints the JSON body of a status report)
    autoscale_step.py check               (exit 0 when this agent can run the steps: Python and the requirements)

What has been done lives in the build's state file (PIPELINE_STATE, see scripts/pipeline/state.py); the IP stage
(get-available-ip.py) puts the reserved addresses there, and each step here adds what it created, so the undo takes
back exactly that. Each step writes the JSON body of its step report to STEP_RESULT ({"step", "status",
"message", "details"}), which the Jenkinsfile posts to the portal with curl, whether the step worked or not.

Environment (Jenkins parameters, credentials bound with withCredentials, and agent settings):
    SERVICE_NAME, TEMPLATE_NAME, VM_NAME_PATTERN, CLUSTER, RESOURCE_POOL, FOLDER, DATASTORE, NETWORK,
    F5_POOL, F5_PARTITION, F5_MEMBER_PORT                                   (build parameters)
    VCENTER_URL, VCENTER_USER, VCENTER_PASSWORD, VCENTER_VERIFY_TLS           (vCenter)
    F5_URL, F5_USER, F5_PASSWORD, F5_VERIFY_TLS                               (F5 BIG-IP)
    VM_TASK_TIMEOUT (600), GUEST_IP_TIMEOUT (600), F5_HEALTH_TIMEOUT (300), POLL_INTERVAL (2)   seconds
Exit status: 0 done, 1 the step failed (the message is on stderr and in STEP_RESULT), 2 bad arguments.
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from pipeline.portal import PortalClient, PortalError  # noqa: E402
from pipeline.state import PipelineState  # noqa: E402

from integrations.errors import IntegrationError  # noqa: E402

STEPS = {
    "vm-clone": "vm_clone",
    "vm-customize": "vm_customize",
    "vm-power-on": "vm_power_on",
    "vm-guest-ip": "vm_guest_ip",
    "f5-add": "f5_add",
    "health-check": "health_check",
    "rollback-f5": "rollback_f5",
    "rollback-vm": "rollback_vm",
    "rollback-ip": "rollback_ip",
}
TRUE = {"1", "true", "yes", "on"}


class StepFailed(Exception):
    pass


class Aborted(Exception):
    pass


def env(name, default=None, *, required=False):
    value = os.environ.get(name, "")
    if value == "":
        if required:
            raise StepFailed(f"{name} is not set on the agent (a build parameter, credential or agent variable).")
        return default
    return value


def seconds(name, default):
    try:
        return float(env(name, default))
    except ValueError:
        raise StepFailed(f"{name}={env(name)!r} is not a number of seconds.") from None


def vcenter():
    from integrations.vcenter import VcenterClient

    return VcenterClient(
        env("VCENTER_URL", required=True),
        env("VCENTER_USER", required=True),
        env("VCENTER_PASSWORD", required=True),
        verify_tls=env("VCENTER_VERIFY_TLS", "true").lower() in TRUE,
        timeout=seconds("VCENTER_TIMEOUT", 30),
    )


def f5():
    from integrations.f5 import F5Client

    return F5Client(
        env("F5_URL", required=True),
        env("F5_USER", required=True),
        env("F5_PASSWORD", required=True),
        verify_tls=env("F5_VERIFY_TLS", "true").lower() in TRUE,
        timeout=seconds("F5_TIMEOUT", 10),
    )


def f5_target():
    port = env("F5_MEMBER_PORT", "80")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise StepFailed(f"F5_MEMBER_PORT={port!r} is not a port number.")
    return env("F5_POOL", required=True), env("F5_PARTITION", "Common"), int(port)


def vm_name_candidates(pattern, service):
    """Names from the config's pattern ({service}, {n}) with n = 1, 2, ...; a pattern without {n} gets -N added."""
    for n in range(1, 10000):
        try:
            name = pattern.format(service=service, n=n)
        except (KeyError, IndexError, ValueError) as exc:
            raise StepFailed(f"VM_NAME_PATTERN={pattern!r} is not valid ({exc}); use {{service}} and {{n}}.") from None
        if "{n" not in pattern:
            name = f"{name}-{n}"
        yield name


# --- steps ---------------------------------------------------------------------------------------------------
def vm_clone(state):
    """Clone one VM per reserved address; names from the pattern, never one vCenter already has."""
    if not state["ips"]:
        raise StepFailed("No reserved IP address in the pipeline state: the IP stage did not run.")
    template_name = env("TEMPLATE_NAME", required=True)
    pattern = env("VM_NAME_PATTERN", "{service}-{n:03d}")
    service = env("SERVICE_NAME", required=True)
    done = {vm["ip"] for vm in state["vms"]}
    created = []
    with vcenter() as client:
        template = client.find_vm(template_name)
        if template is None:
            raise StepFailed(f"Template {template_name!r} does not exist in vCenter.")
        if not template.is_template:
            raise StepFailed(f"{template_name!r} in vCenter is a VM, not a template.")
        taken = {vm.name for vm in client.list_vms()}
        names = (name for name in vm_name_candidates(pattern, service) if name not in taken)
        for ip in state["ips"]:
            if ip["address"] in done:
                continue
            name = next(names)
            try:
                vm = client.clone_from_template(
                    template.moid,
                    name=name,
                    folder=env("FOLDER"),
                    resource_pool=env("RESOURCE_POOL") or env("CLUSTER"),
                    datastore=env("DATASTORE"),
                    network=env("NETWORK"),
                    timeout=seconds("VM_TASK_TIMEOUT", 600),
                )
            except IntegrationError as exc:
                # A clone that failed half-way may have left a VM by that name: record it so the undo removes it.
                leftover = _find_quietly(client, name)
                if leftover is not None:
                    state.add("vms", {"name": name, "moid": leftover.moid, "ip": ip["address"]})
                raise StepFailed(str(exc)) from None
            state.add("vms", {"name": vm.name, "moid": vm.moid, "ip": ip["address"]})
            # vCenter may accept a duplicate name that someone created at the same moment: refuse to go on with one.
            if [v.moid for v in client.list_vms() if v.name == name] != [vm.moid]:
                raise StepFailed(f"Another VM called {name!r} appeared in vCenter while cloning; not using the name.")
            created.append(vm.name)
    return f"Cloned {', '.join(created) or 'nothing new'} from template {template_name}.", {"vms": created}


def _find_quietly(client, name):
    try:
        return client.find_vm(name)
    except IntegrationError:
        return None


def vm_customize(state):
    from integrations.vcenter import GuestCustomization

    ips = {ip["address"]: ip for ip in state["ips"]}
    with vcenter() as client:
        for vm in state["vms"]:
            ip = ips[vm["ip"]]
            customization = GuestCustomization(
                hostname=vm["name"].replace("_", "-").replace(".", "-")[:63],
                ip_address=ip["address"],
                netmask=ip["netmask"],
                gateway=ip.get("gateway") or "",
                dns_servers=tuple(ip.get("dns_servers") or ()),
            )
            client.customize(vm["moid"], customization, timeout=seconds("VM_TASK_TIMEOUT", 600))
    names = ", ".join(f"{vm['name']}={vm['ip']}" for vm in state["vms"])
    return f"Customized {names}.", {}


def vm_power_on(state):
    with vcenter() as client:
        for vm in state["vms"]:
            client.power_on(vm["moid"], timeout=seconds("VM_TASK_TIMEOUT", 600))
    return f"Powered on {', '.join(vm['name'] for vm in state['vms'])}.", {}


def vm_guest_ip(state):
    portal = _portal()
    with vcenter() as client:
        for vm in state["vms"]:
            client.wait_for_guest_ip(
                vm["moid"],
                timeout=seconds("GUEST_IP_TIMEOUT", 600),
                interval=seconds("POLL_INTERVAL", 2),
                expected=vm["ip"],
            )
            if portal is not None:
                portal.ip_confirm(vm["ip"], vm["name"])
    return (
        "Guests report " + ", ".join(f"{vm['name']}={vm['ip']}" for vm in state["vms"]) + " (addresses in use).",
        {"vm_names": [vm["name"] for vm in state["vms"]], "vm_ips": [vm["ip"] for vm in state["vms"]]},
    )


def f5_add(state):
    pool, partition, port = f5_target()
    known = {(m["address"], m["port"]) for m in state["f5_members"]}
    with f5() as client:
        # Logs in and checks the pool first: when this fails, nothing was sent that could have added a member.
        if not client.pool_exists(pool, partition):
            raise StepFailed(f"F5 pool /{partition}/{pool} does not exist.")
        for vm in state["vms"]:
            # Recorded before the call: if the answer is lost, the undo still removes it.
            if (vm["ip"], port) not in known:
                state.add("f5_members", {"pool": pool, "partition": partition, "address": vm["ip"], "port": port})
            client.add_member(pool, partition, vm["ip"], port)
    members = ", ".join(f"{vm['ip']}:{port}" for vm in state["vms"])
    return f"Added {members} to pool /{partition}/{pool}.", {}


def health_check(state):
    timeout = seconds("F5_HEALTH_TIMEOUT", 300)
    with f5() as client:
        for member in state["f5_members"]:
            client.wait_member_up(
                member["pool"],
                member["partition"],
                member["address"],
                member["port"],
                timeout=timeout,
                interval=seconds("POLL_INTERVAL", 2),
            )
    return f"F5 reports {len(state['f5_members'])} member(s) up.", {}


def rollback_f5(state):
    if not state["f5_members"]:
        return None
    removed = []
    with f5() as client:
        for member in list(state["f5_members"]):
            client.remove_member(
                member["pool"], member["partition"], member["address"], member["port"], delete_node=True
            )
            state.remove("f5_members", lambda m, member=member: m == member)
            removed.append(f"{member['address']}:{member['port']}")
    return f"Removed {', '.join(removed)} (and its node) from the F5 pool, or found it gone.", {}


def rollback_vm(state):
    if not state["vms"]:
        return None
    destroyed = []
    with vcenter() as client:
        for vm in list(state["vms"]):
            client.destroy_vm(vm["moid"], power_off=True, timeout=seconds("VM_TASK_TIMEOUT", 600))
            state.remove("vms", lambda v, vm=vm: v["moid"] == vm["moid"])
            destroyed.append(vm["name"])
    return f"Destroyed {', '.join(destroyed)}.", {}


def rollback_ip(state):
    portal = _portal()
    if portal is None:
        raise StepFailed("CALLBACK_URL and CALLBACK_TOKEN are needed to release addresses.")
    # Everything of this event, not only what the state file knows: a reservation whose answer was lost counts too.
    released = portal.ip_release().get("released", [])
    state.remove("ips", lambda ip: True)
    if not released:
        return None
    return f"Released {', '.join(released)}.", {}


def _portal():
    return PortalClient.from_env()


# --- status reports ------------------------------------------------------------------------------------------
def status_body(state, which):
    body = {"message": ""}
    number = env("BUILD_NUMBER")
    if number and number.isdigit():
        body["build_number"] = int(number)
    if env("BUILD_URL"):
        body["build_url"] = env("BUILD_URL")
    if which == "running":
        body["status"] = "running"
    elif which == "succeeded":
        body.update(
            status="succeeded",
            vm_names=[vm["name"] for vm in state["vms"]],
            vm_ips=[vm["ip"] for vm in state["vms"]],
            message=f"Added {', '.join(vm['name'] for vm in state['vms'])}.",
        )
    else:
        failure = state.data.get("failure") or {
            "step": "",
            "message": "The build stopped (failed or aborted) before a step reported a failure.",
        }
        undo_failures = state.data.get("undo_failures") or []
        leftovers = [
            *(f"F5 member {m['address']}:{m['port']}" for m in state["f5_members"]),
            *(f"VM {vm['name']}" for vm in state["vms"]),
            *(f"IP {ip['address']}" for ip in state["ips"]),
        ]
        message = failure["message"]
        if undo_failures or leftovers:
            body["status"] = "failed"
            message += " Undo incomplete: " + "; ".join(undo_failures or [f"left {', '.join(leftovers)}"])
        else:
            body["status"] = "rolled_back"
        body.update(failed_step=failure["step"], message=message)
    return body


def agent_check():
    """The step commands' libraries import here (the pipeline's first stage runs this before anything else)."""
    try:
        import integrations.f5
        import integrations.vcenter  # noqa: F401
    except ImportError as exc:
        print(f"autoscale_step check: {exc}; install the portal's requirements.txt for PORTAL_PYTHON.", file=sys.stderr)
        return 1
    return 0


# --- running a step ------------------------------------------------------------------------------------------
def _on_sigterm(signum, frame):
    raise Aborted("The build was aborted while this step ran.")


def run_step(command, state, result_path):
    step = STEPS[command]
    started = time.monotonic()
    undo = command.startswith("rollback-")
    try:
        outcome = globals()[command.replace("-", "_")](state)
    except (StepFailed, IntegrationError, PortalError, Aborted) as exc:
        message = str(exc)
        status, code = "failed", 1
    except Exception as exc:  # an unexpected error still has to reach the portal as this step's failure
        message = f"{type(exc).__name__}: {exc}"
        status, code = "failed", 1
    else:
        status, code = ("skipped", 0) if outcome is None else ("succeeded", 0)
        message, details = outcome if outcome is not None else ("Nothing to undo.", {})
    if code:
        details = {}
        print(f"autoscale_step {command}: {message}", file=sys.stderr)
        if undo:
            state.data.setdefault("undo_failures", []).append(f"{step}: {message}")
            state.save()
        else:
            state.record_failure(step, message)
    else:
        print(f"autoscale_step {command}: {message}")
    details = {**details, "seconds": round(time.monotonic() - started, 3)}
    body = {"step": step, "status": status, "message": message, "details": details}
    if result_path:
        Path(result_path).write_text(json.dumps(body))
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autoscale_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=[*STEPS, "status-body", "check"])
    parser.add_argument("which", nargs="?", choices=["running", "succeeded", "final"], help="with status-body")
    parser.add_argument("--state", help="pipeline state file (default: PIPELINE_STATE or ./autoscale-state.json)")
    parser.add_argument("--result", help="write the step report body here (default: STEP_RESULT)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return agent_check()
    state = PipelineState(args.state)
    if args.command == "status-body":
        if not args.which:
            parser.error("status-body needs running, succeeded or final")
        print(json.dumps(status_body(state, args.which)))
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    return run_step(args.command, state, args.result or os.environ.get("STEP_RESULT"))


if __name__ == "__main__":
    sys.exit(main())
