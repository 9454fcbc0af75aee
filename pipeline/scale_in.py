"""The steps of the scale-in pipeline: take the event's instances out of the F5 pool gently, then remove their VMs.

    f5_disable      session user-disabled: existing connections continue, new ones go to the other members
    f5_drain        poll each member's serverside.curConns until all are 0, or DRAIN_TIMEOUT seconds passed
    f5_offline      state user-down: forced offline, BIG-IP sends nothing any more
    f5_remove       remove the member, and its node unless another pool member uses it
    vm_shutdown     ShutdownGuest; power off when the guest refuses or is still on after SHUTDOWN_TIMEOUT
    vm_destroy      destroy the VM
    ip_release      give the instance's address back to its pool (the portal allows exactly these addresses)
    monitoring_remove  report the instance removed: the portal re-renders the scrape targets

Which instances: the portal's list of the event's instances (GET CALLBACK_URL/instances, with the event's token),
each with its VM name, vCenter instance UUID, address and F5 member; INSTANCE_IDS, when given, must name the same
ones. Each instance is reported draining at the disable, removing after the drain and removed at the end.

The undo (rollback_f5_enable) puts back what a failure before the VM was destroyed took away: powers the VM on
again if this build shut it down, adds the member back if it removed it, enables it (user-enabled / user-up), and
reports the instance in service. An instance whose VM was destroyed cannot be put back: the undo reports it failed
with exactly what is left (e.g. "VM web-003 destroyed; IP 10.0.0.5 still allocated"), for the orphan sweep, and the
event ends failed saying the same.

State (pipeline/state.py): `removing`, one entry per instance with what was done to it so far (`done`).
"""

import time

from integrations.errors import IntegrationError
from pipeline.contract import gettext_noop
from pipeline.portal import PortalClient
from pipeline.steps import StepFailed, env, f5, f5_target, seconds, vcenter

MAX_DRAIN_TIMEOUT = 3600


def _portal():
    portal = PortalClient.from_env()
    if portal is None:
        raise StepFailed(
            gettext_noop("CALLBACK_URL and CALLBACK_TOKEN are needed to read and report the instances to remove.")
        )
    return portal


def drain_timeout():
    value = env("DRAIN_TIMEOUT", "300")
    try:
        timeout = float(value)
    except ValueError:
        raise StepFailed(
            gettext_noop("DRAIN_TIMEOUT=%(value)r is not a number of seconds."), {"value": value}
        ) from None
    if not 0 <= timeout <= MAX_DRAIN_TIMEOUT:
        raise StepFailed(
            gettext_noop("DRAIN_TIMEOUT=%(value)r must be between 0 and %(max)d seconds."),
            {"value": value, "max": MAX_DRAIN_TIMEOUT},
        )
    return timeout


def _member(instance, pool, partition, port):
    """The instance's F5 member: the one the portal recorded ("addr:port"), else its address on F5_MEMBER_PORT."""
    text = instance.get("f5_member") or (f"{instance['ip_address']}:{port}" if instance.get("ip_address") else "")
    address, _sep, member_port = text.rpartition(":")
    if not address or not member_port.isdigit():
        return None
    return {"pool": pool, "partition": partition, "address": address, "port": int(member_port)}


def removing(state):
    """The instances this build removes, read from the portal once and then kept in the state file."""
    if state.data.get("removing") is not None:
        return state.data["removing"]
    instances = _portal().instance_list()
    wanted = [part.strip() for part in env("INSTANCE_IDS", "").split(",") if part.strip()]
    listed = sorted(str(instance["id"]) for instance in instances)
    if not instances:
        raise StepFailed(gettext_noop("The portal lists no instance for this scale-in to remove."))
    if wanted and sorted(wanted) != listed:
        raise StepFailed(
            gettext_noop("INSTANCE_IDS=%(wanted)s is not what the portal says this event removes (%(listed)s)."),
            {"wanted": ",".join(wanted), "listed": ",".join(listed)},
        )
    pool, partition, port = f5_target()
    entries = []
    for instance in instances:
        if not instance.get("vm_name"):
            raise StepFailed(
                gettext_noop("Instance #%(instance)s has no VM name in the portal: it cannot be found in vCenter."),
                {"instance": instance["id"]},
            )
        entries.append(
            {
                "instance": instance["id"],
                "vm_name": instance["vm_name"],
                "vcenter_uuid": instance.get("vcenter_uuid") or "",
                "ip": instance.get("ip_address") or "",
                "member": _member(instance, pool, partition, port),
                "moid": None,
                "done": [],
            }
        )
    state.data["removing"] = entries
    state.save()
    return entries


def _done(state, entry, what):
    if what not in entry["done"]:
        entry["done"].append(what)
        state.save()


def _name(member):
    return f"{member['address']}:{member['port']}"


def _where(member):
    return f"{_name(member)} in /{member['partition']}/{member['pool']}"


def _args(member):
    return member["pool"], member["partition"], member["address"], member["port"]


def _report(entry, state_name, reason, **facts):
    _portal().instance_report(entry["instance"], state=state_name, reason=reason, **facts)


# --- steps ---------------------------------------------------------------------------------------------------
def f5_disable(state):
    entries = removing(state)
    disabled, absent = [], []
    with f5() as client:
        for entry in entries:
            member = entry["member"]
            if member is None:
                absent.append(entry["vm_name"])
                continue
            try:
                client.disable_member(*_args(member))
            except IntegrationError as exc:
                if exc.code != "not_found":
                    raise
                absent.append(_name(member))
                entry["member"] = None  # not in the pool: nothing to drain, remove or put back
                state.save()
                continue
            _done(state, entry, "disabled")
            disabled.append(_where(member))
            _report(entry, "draining", f"F5 member {_where(member)} disabled: existing connections continue.")
    for entry in entries:
        if entry["member"] is None:
            _report(entry, "draining", "No F5 member in the pool: nothing to drain.")
    message = f"Disabled {', '.join(disabled) or 'no member'}" + (
        f" ({', '.join(absent)}: not in the pool)." if absent else "."
    )
    return message, {"members": [_name(e["member"]) for e in entries if e["member"]]}


def f5_drain(state):
    entries = [entry for entry in removing(state) if entry["member"] is not None]
    timeout = drain_timeout()
    interval = seconds("POLL_INTERVAL", 2)
    started = time.monotonic()
    deadline = started + timeout
    left = {}
    with f5() as client:
        while True:
            left = {_name(e["member"]): client.member_connections(*_args(e["member"])) for e in entries}
            busy = {name: count for name, count in left.items() if count > 0}
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    waited = round(time.monotonic() - started, 3)
    timed_out = bool(busy)
    for entry in removing(state):
        if timed_out and entry["member"] is not None and left.get(_name(entry["member"])):
            reason = (
                f"Drain timeout ({timeout:g} s) reached with {left[_name(entry['member'])]} connection(s) left on "
                f"{_where(entry['member'])}: forcing it offline."
            )
        else:
            reason = f"Drained in {waited:g} s: no connection left."
        _report(entry, "removing", reason)
    details = {"drain_seconds": waited, "timed_out": timed_out, "connections_left": busy, "drain_timeout": timeout}
    if timed_out:
        listed = ", ".join(f"{name}: {count}" for name, count in busy.items())
        return f"Drain timeout of {timeout:g} s reached with connections left ({listed}); forcing offline.", details
    return f"Drained {len(entries)} member(s) in {waited:g} s: no connection left.", details


def f5_offline(state):
    entries = [entry for entry in removing(state) if entry["member"] is not None]
    with f5() as client:
        for entry in entries:
            client.force_member_offline(*_args(entry["member"]))
            _done(state, entry, "offline")
    return f"Forced {', '.join(_where(e['member']) for e in entries) or 'no member'} offline.", {}


def f5_remove(state):
    entries = [entry for entry in removing(state) if entry["member"] is not None]
    with f5() as client:
        for entry in entries:
            # Recorded first: if the answer is lost, the undo adds the member back rather than leave it out.
            _done(state, entry, "member_removed")
            client.remove_member(*_args(entry["member"]), delete_node=True)
    removed = ", ".join(_where(e["member"]) for e in entries) or "no member"
    return f"Removed {removed} (and its node, unless another pool member uses it).", {}


def _find_vm(client, entry):
    """The entry's VM, or None when vCenter no longer has it: neither by its name nor by its instance UUID (a
    scale-in removes a VM; one already gone is removed, whatever removed it)."""
    vm = client.find_vm(entry["vm_name"])
    if vm is None and entry["vcenter_uuid"]:
        moid = next((f.moid for f in client.list_vm_facts() if f.instance_uuid == entry["vcenter_uuid"]), None)
        if moid is not None:
            raise StepFailed(
                gettext_noop(
                    "VM %(vm)r of instance #%(instance)s is in vCenter under another name (%(moid)s): not touching it."
                ),
                {"vm": entry["vm_name"], "instance": entry["instance"], "moid": moid},
            )
    if vm is None:
        if "gone" not in entry["done"]:
            entry["done"].append("gone")
        return None
    if entry["vcenter_uuid"] and vm.instance_uuid != entry["vcenter_uuid"]:
        raise StepFailed(
            gettext_noop(
                "VM %(vm)r in vCenter has instance UUID %(found)s, not the instance's %(expected)s: not touching it."
            ),
            {"vm": entry["vm_name"], "found": vm.instance_uuid, "expected": entry["vcenter_uuid"]},
        )
    entry["moid"] = vm.moid
    return vm


def vm_shutdown(state):
    entries = removing(state)
    how = {}
    with vcenter() as client:
        for entry in entries:
            vm = _find_vm(client, entry)
            state.save()
            if vm is None:
                how[entry["vm_name"]] = "gone"
                continue
            result = client.shutdown_guest(
                vm.moid,
                timeout=seconds("SHUTDOWN_TIMEOUT", 120),
                interval=seconds("POLL_INTERVAL", 2),
                task_timeout=seconds("VM_TASK_TIMEOUT", 600),
            )
            if result != "already_off":
                _done(state, entry, "shut_down")
            how[entry["vm_name"]] = result
    words = {
        "shutdown": "shut down",
        "powered_off": "powered off (the guest did not shut down)",
        "already_off": "off",
        "gone": "already gone from vCenter",
    }
    return "; ".join(f"{name} {words[result]}" for name, result in how.items()) + ".", {"how": how}


def vm_destroy(state):
    entries = removing(state)
    with vcenter() as client:
        for entry in entries:
            if "destroyed" in entry["done"]:
                continue
            if "gone" not in entry["done"]:
                vm = None if entry["moid"] else _find_vm(client, entry)
                moid = entry["moid"] or (vm.moid if vm is not None else None)
                if moid is not None:
                    client.destroy_vm(moid, power_off=True, timeout=seconds("VM_TASK_TIMEOUT", 600))
            _done(state, entry, "destroyed")
    gone = [e["vm_name"] for e in entries if "gone" in e["done"]]
    destroyed = [e["vm_name"] for e in entries if "gone" not in e["done"]]
    words = [f"Destroyed {', '.join(destroyed)}." if destroyed else ""]
    words.append(f"{', '.join(gone)} already gone from vCenter." if gone else "")
    return " ".join(w for w in words if w), {"gone": gone}


def ip_release(state):
    portal = _portal()
    released = []
    for entry in removing(state):
        if entry["ip"] and "ip_released" not in entry["done"]:
            released += portal.ip_release(entry["ip"]).get("released", [])
        _done(state, entry, "ip_released")
    return f"Released {', '.join(released) or 'no address (none held)'}.", {"released": released}


def monitoring_remove(state):
    entries = removing(state)
    for entry in entries:
        _report(entry, "removed", f"VM {entry['vm_name']} destroyed and its address released.")
        _done(state, entry, "reported_removed")
    names = ", ".join(e["vm_name"] for e in entries)
    return f"Removed {names} from the inventory; the portal re-renders the scrape targets.", {}


# --- the undo ------------------------------------------------------------------------------------------------
def leftover(entry):
    """What a scale-in that destroyed the entry's VM but did not finish left behind, in words ("" otherwise)."""
    done = entry["done"]
    if not {"destroyed", "gone"} & set(done) or "reported_removed" in done:
        return ""
    parts = [f"VM {entry['vm_name']} " + ("gone from vCenter" if "gone" in done else "destroyed")]
    if entry["ip"] and "ip_released" not in done:
        parts.append(f"IP {entry['ip']} still allocated")
    if entry["member"] is not None and "member_removed" not in done:
        parts.append(
            f"member {_name(entry['member'])} still in pool /{entry['member']['partition']}/{entry['member']['pool']}"
        )
    return "; ".join(parts)


def rollback_f5_enable(state):
    entries = state.data.get("removing") or []
    if not entries:
        return None
    portal = _portal()
    restored, left = [], []
    back = [e for e in entries if not {"destroyed", "gone"} & set(e["done"])]
    powered_on = any("shut_down" in e["done"] for e in back)
    if powered_on:
        with vcenter() as client:
            for entry in back:
                if "shut_down" in entry["done"]:
                    client.power_on(entry["moid"], timeout=seconds("VM_TASK_TIMEOUT", 600))
                    entry["done"].remove("shut_down")
                    state.save()
    if any(e["member"] is not None for e in back):
        with f5() as client:
            for entry in back:
                member = entry["member"]
                if member is None:
                    continue
                readded = "member_removed" in entry["done"]
                if readded:
                    client.add_member(*_args(member))
                    entry["done"].remove("member_removed")
                    state.save()
                client.enable_member(*_args(member))
                if readded or powered_on:
                    # In service again only once BIG-IP's monitor says so (the guest booted, the member checked).
                    client.wait_member_up(
                        *_args(member),
                        timeout=seconds("F5_HEALTH_TIMEOUT", 300),
                        interval=seconds("POLL_INTERVAL", 2),
                    )
    for entry in back:
        where = _where(entry["member"]) if entry["member"] else "no F5 member"
        portal.instance_report(entry["instance"], state="in_service", reason=f"Scale-in undone: {where} enabled again.")
        restored.append(entry["vm_name"])
    for entry in entries:
        text = leftover(entry)
        if text:
            portal.instance_report(entry["instance"], state="failed", reason=f"Scale-in failed: {text}.", leftover=text)
            left.append(text)
    state.data["leftovers"] = left
    state.save()
    parts = []
    if restored:
        parts.append(f"Put {', '.join(restored)} back in service (member enabled).")
    if left:
        parts.append(f"Left: {'; '.join(left)}.")
    return " ".join(parts) or "Nothing to put back.", {"leftovers": left}


FORWARD = {
    "f5_disable": f5_disable,
    "f5_drain": f5_drain,
    "f5_offline": f5_offline,
    "f5_remove": f5_remove,
    "vm_shutdown": vm_shutdown,
    "vm_destroy": vm_destroy,
    "ip_release": ip_release,
    "monitoring_remove": monitoring_remove,
}
UNDO = {"rollback_f5_enable": rollback_f5_enable}
STEPS = {**FORWARD, **UNDO}
