"""The steps of the scale-out pipeline, each a function of the build's state: what it did is recorded there.

`FORWARD` runs in the order of jenkins/Jenkinsfile.autoscale's stages, `UNDO` in `post { unsuccessful }`; both
are the portal's step names (EventAction.Step), which each step reports itself (pipeline/cli.py). A step returns
(message, details) when it did something (the message a contract.StepMessage, which the portal shows translated),
None when there was nothing to do (an undo: "skipped"), and raises StepFailed (or an IntegrationError /
PortalError) when it failed.

Environment: the build parameters (pipeline/contract.py) and the agent's variables (contract.AGENT_VARIABLES):
    VCENTER_URL, VCENTER_USER, VCENTER_PASSWORD, VCENTER_VERIFY_TLS           (vCenter)
    F5_URL, F5_USER, F5_PASSWORD, F5_VERIFY_TLS                               (F5 BIG-IP)
    VM_TASK_TIMEOUT (600), GUEST_IP_TIMEOUT (600), F5_HEALTH_TIMEOUT (300), POLL_INTERVAL (2)   seconds
"""

import os

from integrations.errors import IntegrationError
from pipeline.contract import StepMessage, gettext_noop, reserved_message
from pipeline.portal import PortalClient

TRUE = {"1", "true", "yes", "on"}


class StepFailed(Exception):
    """A step failed: its message as an id (our own words, marked with gettext_noop) and its parameters, which the
    portal shows in the reader's language. A text from vCenter, F5 or the portal is passed as it is: no catalog has
    it, so it is shown as it came."""

    def __init__(self, message, params=None):
        self.message = message if isinstance(message, StepMessage) else StepMessage(str(message), params or {})
        super().__init__(str(self.message))


class Aborted(Exception):
    pass


def env(name, default=None, *, required=False):
    value = os.environ.get(name, "")
    if value == "":
        if required:
            raise StepFailed(
                gettext_noop("%(name)s is not set on the agent (a build parameter, credential or agent variable)."),
                {"name": name},
            )
        return default
    return value


def seconds(name, default):
    try:
        return float(env(name, default))
    except ValueError:
        raise StepFailed(
            gettext_noop("%(name)s=%(value)r is not a number of seconds."), {"name": name, "value": env(name)}
        ) from None


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
        raise StepFailed(gettext_noop("F5_MEMBER_PORT=%(port)r is not a port number."), {"port": port})
    return env("F5_POOL", required=True), env("F5_PARTITION", "Common"), int(port)


def vm_name_candidates(pattern, service):
    """Names from the config's pattern ({service}, {n}) with n = 1, 2, ...; a pattern without {n} gets -N added."""
    for n in range(1, 10000):
        try:
            name = pattern.format(service=service, n=n)
        except (KeyError, IndexError, ValueError) as exc:
            raise StepFailed(
                gettext_noop("VM_NAME_PATTERN=%(pattern)r is not valid (%(error)s); use {service} and {n}."),
                {"pattern": pattern, "error": str(exc)},
            ) from None
        if "{n" not in pattern:
            name = f"{name}-{n}"
        yield name


# --- steps ---------------------------------------------------------------------------------------------------
def ip_allocate(state):
    """Reserve VM_COUNT addresses of the config's IP pool in the portal; ping each when the pool asks for it."""
    from pipeline import ipam  # only here: what it imports (subprocess, ipaddress) no other step needs

    portal = _portal()
    if portal is None:
        raise StepFailed(gettext_noop("CALLBACK_URL and CALLBACK_TOKEN are needed to reserve addresses."))
    count = env("VM_COUNT", "1")
    if not count.isdigit() or int(count) < 1:
        raise StepFailed(gettext_noop("VM_COUNT=%(count)r is not a number of VMs."), {"count": count})
    try:
        allocations = ipam.reserve_addresses(portal, state, count=int(count), command=env("PING_COMMAND"))
    except ipam.Exhausted as exc:
        raise StepFailed(str(exc)) from None
    skipped = [address for a in allocations for address in a.get("skipped", [])]
    addresses = [a["address"] for a in allocations]
    return reserved_message(addresses, skipped), {"addresses": addresses, "skipped": skipped}


def vm_clone(state):
    """Clone one VM per reserved address; names from the pattern, never one vCenter already has.

    Each VM's instance is recorded in the portal before its clone starts (so a crash mid-clone leaves a record), the
    VM carries the instance id in its ownership marker, and the instance is reported provisioning with the VM's
    name and vCenter instance UUID. Run again, it records nothing twice and clones only what is missing.
    """
    from integrations.vcenter import OWNERSHIP_FIELD

    if not state["ips"]:
        raise StepFailed(gettext_noop("No reserved IP address in the pipeline state: the IP stage did not run."))
    portal = _portal()
    if portal is None:
        raise StepFailed(gettext_noop("CALLBACK_URL and CALLBACK_TOKEN are needed to record the new instances."))
    template_name = env("TEMPLATE_NAME", required=True)
    pattern = env("VM_NAME_PATTERN", "{service}-{n:03d}")
    service = env("SERVICE_NAME", required=True)
    done = {vm["ip"] for vm in state["vms"]}
    created = []
    with vcenter() as client:
        template = client.find_vm(template_name)
        if template is None:
            raise StepFailed(
                gettext_noop("Template %(template)r does not exist in vCenter."), {"template": template_name}
            )
        if not template.is_template:
            raise StepFailed(
                gettext_noop("%(template)r in vCenter is a VM, not a template."), {"template": template_name}
            )
        taken = {vm.name for vm in client.list_vms()}
        names = (name for name in vm_name_candidates(pattern, service) if name not in taken)
        for ip in state["ips"]:
            if ip["address"] in done:
                continue
            instance_id = _instance_recorded(portal, state, ip)
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
                    state.add(
                        "vms", {"name": name, "moid": leftover.moid, "ip": ip["address"], "instance": instance_id}
                    )
                raise StepFailed(str(exc)) from None
            state.add("vms", {"name": vm.name, "moid": vm.moid, "ip": ip["address"], "instance": instance_id})
            portal.instance_report(
                instance_id,
                state="provisioning",
                reason=StepMessage(
                    gettext_noop("Cloned %(vm)s (%(moid)s) from template %(template)s."),
                    {"vm": vm.name, "moid": vm.moid, "template": template_name},
                ),
                vm_name=vm.name,
                vcenter_uuid=vm.instance_uuid,
            )
            # vCenter may accept a duplicate name that someone created at the same moment: refuse to go on with one.
            if [v.moid for v in client.list_vms() if v.name == name] != [vm.moid]:
                raise StepFailed(
                    gettext_noop("Another VM called %(name)r appeared in vCenter while cloning; not using the name."),
                    {"name": name},
                )
            client.set_custom_value(vm.moid, instance_id, name=OWNERSHIP_FIELD)
            created.append(vm.name)
    if not created:
        return StepMessage(
            gettext_noop("Cloned nothing new from template %(template)s."), {"template": template_name}
        ), {"vms": created}
    message = StepMessage(
        gettext_noop("Cloned %(vms)s from template %(template)s."),
        {"vms": ", ".join(created), "template": template_name},
    )
    return message, {"vms": created}


def _instance_recorded(portal, state, ip):
    """The portal's instance for the VM of this reserved address: recorded once, remembered in the state file."""
    if ip.get("instance") is None:
        ip["instance"] = portal.instance_record(ip["address"])["id"]
        state.save()
    return ip["instance"]


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
    return StepMessage(gettext_noop("Customized %(vms)s."), {"vms": names}), {}


def vm_power_on(state):
    with vcenter() as client:
        for vm in state["vms"]:
            client.power_on(vm["moid"], timeout=seconds("VM_TASK_TIMEOUT", 600))
    return StepMessage(gettext_noop("Powered on %(vms)s."), {"vms": ", ".join(vm["name"] for vm in state["vms"])}), {}


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
        StepMessage(
            gettext_noop("Guests report %(vms)s (addresses in use)."),
            {"vms": ", ".join(f"{vm['name']}={vm['ip']}" for vm in state["vms"])},
        ),
        {"vm_names": [vm["name"] for vm in state["vms"]], "vm_ips": [vm["ip"] for vm in state["vms"]]},
    )


def f5_add(state):
    pool, partition, port = f5_target()
    known = {(m["address"], m["port"]) for m in state["f5_members"]}
    with f5() as client:
        # Logs in and checks the pool first: when this fails, nothing was sent that could have added a member.
        if not client.pool_exists(pool, partition):
            raise StepFailed(
                gettext_noop("F5 pool /%(partition)s/%(pool)s does not exist."), {"partition": partition, "pool": pool}
            )
        for vm in state["vms"]:
            # Recorded before the call: if the answer is lost, the undo still removes it.
            if (vm["ip"], port) not in known:
                state.add("f5_members", {"pool": pool, "partition": partition, "address": vm["ip"], "port": port})
            client.add_member(pool, partition, vm["ip"], port)
            _instance_report(
                vm,
                reason=StepMessage(gettext_noop("Added to F5 pool %(pool)s."), {"pool": f"/{partition}/{pool}"}),
                f5_member=f"{vm['ip']}:{port}",
            )
    members = ", ".join(f"{vm['ip']}:{port}" for vm in state["vms"])
    return StepMessage(
        gettext_noop("Added %(members)s to pool %(pool)s."), {"members": members, "pool": f"/{partition}/{pool}"}
    ), {}


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
    members = {member["address"]: member for member in state["f5_members"]}
    for vm in state["vms"]:
        member = members.get(vm["ip"])
        if member is not None:
            where = f"{member['address']}:{member['port']} in /{member['partition']}/{member['pool']}"
            reason = StepMessage(gettext_noop("F5 reports member %(member)s up."), {"member": where})
            _instance_report(vm, state="in_service", reason=reason)
    return StepMessage(gettext_noop("F5 reports %(count)d member(s) up."), {"count": len(state["f5_members"])}), {}


def _instance_report(vm, **report):
    """Report to the portal what became of the instance of a VM this build created (when it recorded one)."""
    portal = _portal()
    if portal is not None and vm.get("instance") is not None:
        portal.instance_report(vm["instance"], **report)


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
    message = gettext_noop("Removed %(members)s (and its node) from the F5 pool, or found it gone.")
    return StepMessage(message, {"members": ", ".join(removed)}), {}


def rollback_vm(state):
    if not state["vms"]:
        return None
    destroyed = []
    with vcenter() as client:
        for vm in list(state["vms"]):
            client.destroy_vm(vm["moid"], power_off=True, timeout=seconds("VM_TASK_TIMEOUT", 600))
            state.remove("vms", lambda v, vm=vm: v["moid"] == vm["moid"])
            destroyed.append(vm["name"])
    return StepMessage(gettext_noop("Destroyed %(vms)s."), {"vms": ", ".join(destroyed)}), {}


def rollback_ip(state):
    portal = _portal()
    if portal is None:
        raise StepFailed(gettext_noop("CALLBACK_URL and CALLBACK_TOKEN are needed to release addresses."))
    # Everything of this event, not only what the state file knows: a reservation whose answer was lost counts too.
    released = portal.ip_release().get("released", [])
    state.remove("ips", lambda ip: True)
    if not released:
        return None
    return StepMessage(gettext_noop("Released %(addresses)s."), {"addresses": ", ".join(released)}), {}


def _portal():
    return PortalClient.from_env()


FORWARD = {
    "ip_allocate": ip_allocate,
    "vm_clone": vm_clone,
    "vm_customize": vm_customize,
    "vm_power_on": vm_power_on,
    "vm_guest_ip": vm_guest_ip,
    "f5_add": f5_add,
    "health_check": health_check,
}
# The undo, in the order it runs: the reverse of what the forward steps created.
UNDO = {"rollback_f5": rollback_f5, "rollback_vm": rollback_vm, "rollback_ip": rollback_ip}
STEPS = {**FORWARD, **UNDO}
