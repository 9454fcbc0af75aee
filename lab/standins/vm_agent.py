"""The lab's stand-in for "a new VM boots and runs node_exporter": every scrape target the portal writes on the
monitoring host inside the given networks becomes a VM of the metrics stand-in, and leaves it when the target goes.

In production a VM the pipeline cloned runs node_exporter from its template, and the portal lists its address in the
service's file_sd targets once the pipeline confirmed it. In the lab the VMs' node_exporters are the metrics
stand-in (lab/standins/metrics.py); this agent follows the targets files (`<targets-dir>/<service>.json`, the
`service` label of each group) and registers each target address with that service, so Prometheus finds a node
exporter there and the service's load is shared over one more VM. It only touches addresses inside `--network`
(other tests' targets are not its business) and only unregisters VMs it registered itself. It exits when the
metrics stand-in has not answered for `--give-up` seconds (the lab was stopped).

    python -m lab.standins.vm_agent --metrics-url URL --targets-dir DIR --network 127.0.100.0/24 [--vm-port 9100]
"""

import argparse
import ipaddress
import json
import time
from pathlib import Path

from lab.standins.metrics import DEFAULT_VM_PORT, MetricsStandinClient, StandinError


def desired_vms(targets_dir, networks, vm_port):
    """address -> service for every target of the targets files that lies in `networks` on `vm_port`."""
    wanted = {}
    for path in sorted(Path(targets_dir).glob("*.json")):
        try:
            groups = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now: read it on the next round
        for group in groups if isinstance(groups, list) else []:
            service = (group.get("labels") or {}).get("service")
            if not service:
                continue
            for target in group.get("targets") or []:
                host, _sep, port = str(target).rpartition(":")
                try:
                    address = ipaddress.IPv4Address(host)
                except ValueError:
                    continue
                if port == str(vm_port) and any(address in network for network in networks):
                    wanted[str(address)] = service
    return wanted


class VmAgent:
    def __init__(self, metrics, targets_dir, networks, vm_port=DEFAULT_VM_PORT):
        self.metrics = metrics
        self.targets_dir = targets_dir
        self.networks = [ipaddress.IPv4Network(str(n), strict=False) for n in networks]
        self.vm_port = vm_port
        self.registered = {}  # address -> service, the VMs this agent booted

    def sync(self):
        """One round: register new targets, unregister the ones that went. Returns (added, removed)."""
        wanted = desired_vms(self.targets_dir, self.networks, self.vm_port)
        known = {vm["address"]: vm for vm in self.metrics.state()["vms"]}
        added, removed = [], []
        for address, service in sorted(wanted.items()):
            if address in known and known[address]["service"] == service:
                continue
            if address in known and address not in self.registered:
                continue  # someone else's VM (a test's or the demo's seeded one): leave it alone
            try:
                self.metrics.register_vm(address, service, powered_on=True, port=self.vm_port)
            except StandinError as exc:
                print(f"vm agent: cannot boot {address} for {service}: {exc}", flush=True)
                continue
            self.registered[address] = service
            added.append(address)
        for address in sorted(set(self.registered) - set(wanted)):
            self.metrics.unregister_vm(address)
            del self.registered[address]
            removed.append(address)
        return added, removed

    def run(self, interval=0.3, give_up=10.0):
        last_ok = time.monotonic()
        while True:
            try:
                added, removed = self.sync()
                last_ok = time.monotonic()
                for address in added:
                    print(f"vm agent: {address} booted ({self.registered[address]})", flush=True)
                for address in removed:
                    print(f"vm agent: {address} gone", flush=True)
            except (OSError, StandinError) as exc:
                if time.monotonic() - last_ok > give_up:
                    print(f"vm agent: metrics stand-in unreachable for {give_up:.0f}s ({exc}); stopping", flush=True)
                    return
            time.sleep(interval)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-url", required=True, help="control URL of the metrics stand-in")
    parser.add_argument("--targets-dir", required=True, help="the portal's file_sd targets directory")
    parser.add_argument("--network", action="append", required=True, help="only targets in this network (repeat)")
    parser.add_argument("--vm-port", type=int, default=DEFAULT_VM_PORT)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--give-up", type=float, default=10.0)
    args = parser.parse_args(argv)
    for network in args.network:
        if not ipaddress.IPv4Network(network, strict=False).subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            parser.error(f"--network {network}: only loopback networks (127.0.0.0/8)")
    agent = VmAgent(MetricsStandinClient(args.metrics_url), args.targets_dir, args.network, args.vm_port)
    print(f"vm agent: following {args.targets_dir} for {', '.join(args.network)}", flush=True)
    agent.run(args.interval, args.give_up)


if __name__ == "__main__":
    main()
