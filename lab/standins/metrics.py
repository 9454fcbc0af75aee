"""Metrics stand-in for the services' VMs: node_exporter-compatible series on each VM's own loopback address.

One process simulates every VM. Each registered, powered-on VM gets its own HTTP listener on ADDRESS:PORT (port
9100 by default, like node_exporter) serving `/metrics`, so Prometheus scrapes VMs exactly as in production and
the portal's default rule expressions work unchanged. A service's load is set as a total (in percent of one VM)
and shared among its powered-on VMs: 80 % on one VM becomes 40 % each when a second VM comes up.

CPU counters advance in real time at the current load, so `rate(node_cpu_seconds_total{mode="idle"}[5s])` shows
a new load after two scrapes. Switching the load settles the counters first, so they never jump or go backwards;
powering a VM on resets its counters, as a boot does.

Control API (JSON, on its own loopback port):
    GET    /_lab/health                       liveness
    GET    /_lab/state                        services, VMs and what each VM currently reports
    PUT    /_lab/vms/<address>                register or update a VM: {"service", "powered_on", "port", "cpus",
                                              "memory_bytes", "name"}; 201 new, 200 updated, 409 address:port
                                              taken
    DELETE /_lab/vms/<address>                unregister (stops serving)
    PUT    /_lab/services/<service>/load      {"cpu_percent": 80, "memory_percent": 50}
    POST   /_lab/reset                        unregister every VM and forget every load

Run: python -m lab.standins.metrics --control-port N [--vm-port 9100]. `MetricsStandinClient` below drives the
control API from tests and commands (standard library only).
"""

import argparse
import contextlib
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lab.networks import loopback_network

DEFAULT_VM_PORT = 9100
DEFAULT_CPUS = 2
DEFAULT_MEMORY_BYTES = 4 * 1024**3
# An idle service still uses a little; what a VM reports before anyone sets its service's load.
DEFAULT_CPU_PERCENT = 5.0
DEFAULT_MEMORY_PERCENT = 20.0
# How busy time splits between modes; the other node_exporter modes stay at zero.
BUSY_SPLIT = {"user": 0.75, "system": 0.25}
CPU_MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"]


class StandinError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class SimulatedVm:
    def __init__(self, address, port, service, cpus, memory_bytes, name):
        self.address = address
        self.name = name
        self.port = port
        self.service = service
        self.cpus = cpus
        self.memory_bytes = memory_bytes
        self.powered_on = False
        self.cpu_percent = 0.0
        self.memory_percent = 0.0
        self.scrapes = 0
        self.boot_time = time.time()
        self._settled = {mode: 0.0 for mode in CPU_MODES}  # seconds per CPU, up to _settled_at
        self._settled_at = time.monotonic()
        self._server = None

    # --- counters ------------------------------------------------------------------------------------------
    def _rates(self):
        busy = self.cpu_percent / 100.0 if self.powered_on else 0.0
        rates = dict.fromkeys(CPU_MODES, 0.0)
        rates["idle"] = 1.0 - busy
        for mode, share in BUSY_SPLIT.items():
            rates[mode] = busy * share
        return rates

    def settle(self):
        """Fold the time since the last change into the counters at the current rates."""
        now = time.monotonic()
        elapsed = now - self._settled_at
        for mode, rate in self._rates().items():
            self._settled[mode] += rate * elapsed
        self._settled_at = now

    def reset_counters(self):
        self._settled = dict.fromkeys(CPU_MODES, 0.0)
        self._settled_at = time.monotonic()
        self.boot_time = time.time()

    def cpu_seconds(self):
        elapsed = time.monotonic() - self._settled_at
        return {mode: self._settled[mode] + rate * elapsed for mode, rate in self._rates().items()}

    def exposition(self):
        seconds = self.cpu_seconds()
        available = self.memory_bytes * (1.0 - self.memory_percent / 100.0)
        lines = [
            "# HELP node_boot_time_seconds Node boot time, in unixtime.",
            "# TYPE node_boot_time_seconds gauge",
            f"node_boot_time_seconds {self.boot_time:.3f}",
            "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
            "# TYPE node_cpu_seconds_total counter",
        ]
        for cpu in range(self.cpus):
            for mode in CPU_MODES:
                lines.append(f'node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}} {seconds[mode]:.6f}')
        lines += [
            "# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.",
            "# TYPE node_memory_MemAvailable_bytes gauge",
            f"node_memory_MemAvailable_bytes {available:.0f}",
            "# HELP node_memory_MemFree_bytes Memory information field MemFree_bytes.",
            "# TYPE node_memory_MemFree_bytes gauge",
            f"node_memory_MemFree_bytes {available * 0.8:.0f}",
            "# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.",
            "# TYPE node_memory_MemTotal_bytes gauge",
            f"node_memory_MemTotal_bytes {self.memory_bytes}",
            "# HELP node_uname_info Labeled system information as provided by the uname system call.",
            "# TYPE node_uname_info gauge",
            f'node_uname_info{{machine="x86_64",nodename="{_label_value(self.name)}",sysname="Linux"}} 1',
        ]
        return "\n".join(lines) + "\n"

    # --- listener ------------------------------------------------------------------------------------------
    def start_serving(self):
        if self._server is not None:
            return
        vm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] == "/metrics":
                    vm.scrapes += 1
                    body = vm.exposition().encode()
                    content_type = "text/plain; version=0.0.4; charset=utf-8"
                    status = 200
                elif self.path == "/":
                    body = b"<html><body><h1>Node Exporter (lab stand-in)</h1><a href='/metrics'>Metrics</a></body>"
                    content_type = "text/html"
                    status = 200
                else:
                    body, content_type, status = b"not found\n", "text/plain", 404
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        try:
            server = ThreadingHTTPServer((self.address, self.port), Handler)
        except OSError as exc:
            raise StandinError(409, f"cannot listen on {self.address}:{self.port}: {exc.strerror or exc}") from exc
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=f"vm-{self.address}", daemon=True).start()
        self._server = server

    def stop_serving(self):
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def as_dict(self):
        return {
            "address": self.address,
            "name": self.name,
            "port": self.port,
            "service": self.service,
            "powered_on": self.powered_on,
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "cpu_percent": round(self.cpu_percent, 3),
            "memory_percent": round(self.memory_percent, 3),
            "scrapes": self.scrapes,
            "target": f"{self.address}:{self.port}",
        }


class Simulation:
    def __init__(self, vm_port=DEFAULT_VM_PORT):
        self.vm_port = vm_port
        self.vms = {}
        self.loads = {}
        self.lock = threading.Lock()

    def _rebalance(self, service):
        """Share the service's total load among its powered-on VMs (each capped at 100 %)."""
        cpu, memory = self.loads.get(service, (DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_PERCENT))
        members = [vm for vm in self.vms.values() if vm.service == service]
        running = [vm for vm in members if vm.powered_on]
        for vm in members:
            vm.settle()
            share = len(running) or 1
            vm.cpu_percent = min(100.0, cpu / share) if vm.powered_on else 0.0
            vm.memory_percent = min(100.0, memory / share) if vm.powered_on else 0.0

    def put_vm(self, address, spec):
        address = _loopback_address(address)
        service = spec.get("service")
        with self.lock:
            vm = self.vms.get(address)
            if vm is None and not (isinstance(service, str) and service):
                raise StandinError(400, "service: required, a non-empty string")
            port = _int_field(spec, "port", vm.port if vm else self.vm_port, 1, 65535)
            cpus = _int_field(spec, "cpus", vm.cpus if vm else DEFAULT_CPUS, 1, 256)
            memory = _int_field(spec, "memory_bytes", vm.memory_bytes if vm else DEFAULT_MEMORY_BYTES, 1, 2**50)
            powered_on = spec.get("powered_on", vm.powered_on if vm else True)
            if not isinstance(powered_on, bool):
                raise StandinError(400, "powered_on: must be true or false")
            name = spec.get("name") or (vm.name if vm else address)
            if not isinstance(name, str):
                raise StandinError(400, "name: must be a string")
            created = vm is None
            old_service = None
            if created:
                vm = SimulatedVm(address, port, service, cpus, memory, name)
            else:
                vm.settle()
                if port != vm.port:
                    vm.stop_serving()
                    vm.port = port
                if service and service != vm.service:
                    old_service, vm.service = vm.service, service
                vm.cpus = cpus
                vm.memory_bytes = memory
                vm.name = name
            if powered_on:
                vm.start_serving()
                if not vm.powered_on:
                    vm.reset_counters()
            else:
                vm.stop_serving()
            vm.powered_on = powered_on
            self.vms[address] = vm
            self._rebalance(vm.service)
            if old_service:
                self._rebalance(old_service)
            return created, vm.as_dict()

    def delete_vm(self, address):
        address = _loopback_address(address)
        with self.lock:
            vm = self.vms.pop(address, None)
            if vm is None:
                raise StandinError(404, f"no VM registered at {address}")
            vm.stop_serving()
            self._rebalance(vm.service)

    def set_load(self, service, spec):
        cpu = _percent_field(spec, "cpu_percent", None)
        memory = _percent_field(spec, "memory_percent", None)
        with self.lock:
            old_cpu, old_memory = self.loads.get(service, (DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_PERCENT))
            self.loads[service] = (old_cpu if cpu is None else cpu, old_memory if memory is None else memory)
            self._rebalance(service)
            return self.service_state(service)

    def service_state(self, service):
        cpu, memory = self.loads.get(service, (DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_PERCENT))
        vms = [vm for vm in self.vms.values() if vm.service == service]
        return {
            "cpu_percent": cpu,
            "memory_percent": memory,
            "vms": sorted(vm.address for vm in vms),
            "powered_on": sum(vm.powered_on for vm in vms),
        }

    def reset(self):
        with self.lock:
            for vm in self.vms.values():
                vm.stop_serving()
            self.vms.clear()
            self.loads.clear()

    def state(self):
        with self.lock:
            services = {vm.service for vm in self.vms.values()} | set(self.loads)
            return {
                "vm_port": self.vm_port,
                "services": {name: self.service_state(name) for name in sorted(services)},
                "vms": [self.vms[address].as_dict() for address in sorted(self.vms)],
            }


def _label_value(text):
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _loopback_address(text):
    try:
        address = ipaddress.IPv4Address(urllib.parse.unquote(text))
    except ValueError as exc:
        raise StandinError(400, f"address: {text!r} is not an IPv4 address") from exc
    if not address.is_loopback:
        raise StandinError(400, f"address: {address} is not a loopback address (127.0.0.0/8)")
    return str(address)


def _int_field(spec, name, default, low, high):
    value = spec.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StandinError(400, f"{name}: must be an integer between {low} and {high}")
    return value


def _percent_field(spec, name, default):
    value = spec.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise StandinError(400, f"{name}: must be a number >= 0 (percent of one VM; totals above 100 are shared)")
    return float(value)


def make_control_server(host, port, simulation):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, payload=None):
            body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            if not length:
                return {}
            try:
                data = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise StandinError(400, f"body: not JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise StandinError(400, "body: must be a JSON object")
            return data

        def _route(self, method):
            parts = [part for part in urllib.parse.urlsplit(self.path).path.split("/") if part]
            if parts[:1] != ["_lab"]:
                raise StandinError(404, f"unknown path {self.path}")
            parts = parts[1:]
            if method == "GET" and parts == ["health"]:
                return 200, {"ok": True}
            if method == "GET" and parts == ["state"]:
                return 200, simulation.state()
            if method == "POST" and parts == ["reset"]:
                simulation.reset()
                return 200, simulation.state()
            if len(parts) == 2 and parts[0] == "vms":
                if method == "PUT":
                    created, vm = simulation.put_vm(parts[1], self._body())
                    return (201 if created else 200), vm
                if method == "DELETE":
                    simulation.delete_vm(parts[1])
                    return 204, None
            if method == "PUT" and len(parts) == 3 and parts[0] == "services" and parts[2] == "load":
                return 200, simulation.set_load(urllib.parse.unquote(parts[1]), self._body())
            raise StandinError(404, f"unknown {method} {self.path}")

        def _handle(self, method):
            try:
                status, payload = self._route(method)
            except StandinError as exc:
                status, payload = exc.status, {"error": exc.message}
            self._send(status, payload)

        def do_GET(self):
            self._handle("GET")

        def do_PUT(self):
            self._handle("PUT")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


# --- client ---------------------------------------------------------------------------------------------------


class MetricsStandinClient:
    """Drives the stand-in's control API (tests, management commands, the lab's pipeline steps)."""

    def __init__(self, base_url, timeout=5.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method, path, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise StandinError(exc.code, f"metrics stand-in: {method} {path}: {detail}") from exc
        return json.loads(body) if body else None

    def register_vm(self, address, service, *, powered_on=True, port=None, cpus=None, memory_bytes=None, name=None):
        """Register (or update) a VM; its /metrics is served at once when powered on. Returns the VM's state."""
        spec = {
            "service": service,
            "powered_on": powered_on,
            "port": port,
            "cpus": cpus,
            "memory_bytes": memory_bytes,
            "name": name,
        }
        return self._call("PUT", f"/_lab/vms/{address}", {k: v for k, v in spec.items() if v is not None})

    def power(self, address, powered_on):
        return self._call("PUT", f"/_lab/vms/{address}", {"powered_on": powered_on})

    def unregister_vm(self, address, *, missing_ok=True):
        try:
            self._call("DELETE", f"/_lab/vms/{address}")
        except StandinError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    def set_load(self, service, *, cpu_percent=None, memory_percent=None):
        spec = {"cpu_percent": cpu_percent, "memory_percent": memory_percent}
        path = f"/_lab/services/{urllib.parse.quote(service, safe='')}/load"
        return self._call("PUT", path, {k: v for k, v in spec.items() if v is not None})

    def state(self):
        return self._call("GET", "/_lab/state")

    def reset(self):
        return self._call("POST", "/_lab/reset")


def random_loopback_network(prefixlen=24):
    """A loopback network (never 127.0.x.x) that no other process on this machine and no earlier call uses
    (lab/networks.py), so concurrent test runs give their VMs different addresses."""
    return loopback_network(prefixlen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="control API address (loopback)")
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--vm-port", type=int, default=DEFAULT_VM_PORT, help="default port of each VM's /metrics")
    args = parser.parse_args(argv)
    if not ipaddress.IPv4Address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    simulation = Simulation(vm_port=args.vm_port)
    server = make_control_server(args.host, args.control_port, simulation)
    control = f"http://{args.host}:{args.control_port}/_lab/"
    print(f"metrics stand-in: control {control}, VMs on port {args.vm_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        simulation.reset()


if __name__ == "__main__":
    main()
