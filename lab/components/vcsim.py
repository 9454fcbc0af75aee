"""The vCenter simulator: govmomi's `simulator` package (Debian's golang-github-vmware-govmomi-dev, 0.24.2) behind
the small Go main in lab/vcsim/, serving the vSphere SOAP API over HTTPS on a free loopback port.

Build: `go build` offline (GOPROXY=off, GOFLAGS=-mod=mod, go.mod replace directives to /usr/share/gocode/src); the
binary is cached under var/cache/vcsim/<hash of the sources and the Go version>/vcsim, so only the first start
of a machine pays the ~12 s cold build. Concurrent test sessions share the cache under a file lock.

The lab's simulator accepts only its own generated credentials (VCENTER_USER / VCENTER_PASSWORD), so a wrong
password really fails to log in. Its certificate is Go's self-signed test certificate: the portal must be told
VCENTER_VERIFY_TLS=false, and a client that verifies certificates is refused (as with an unknown real vCenter).

Inventory (the simulator's VPX model): datacenter DC0; cluster /DC0/host/DC0_C0 with hosts DC0_C0_H0..H2 and the
root pool /DC0/host/DC0_C0/Resources; standalone host DC0_H0; VMs DC0_H0_VM0.., DC0_C0_RP0_VM0.. (`vms_per_pool`
per resource pool and per standalone host, powered on); datastore LocalDS_0; networks "VM Network" and the
distributed port group DC0_DVPG0. VM folder /DC0/vm.

What the simulator does with guest IPs (read from simulator/virtual_machine.go of that version):
- VMs start with one NIC each (`guest.net` has one entry) but no guest IP; nothing ever invents one.
- `CustomizeVM_Task` is accepted only while the VM is powered off, only with exactly one NicSettingMap entry per
  NIC (else NicSettingMismatch), and only once until applied (else CustomizationPending). It stores the spec.
- The next `PowerOnVM_Task` applies it: `guest.ipAddress` and `guest.net[i].ipAddress` take the
  CustomizationFixedIp address, `guest.hostName` the LinuxPrep/Sysprep host name, DNS servers go to the NIC's
  dnsConfig. So clone -> customize -> power on -> wait for guest.ipAddress works here as on a real vCenter.
- `CloneVM_Task` ignores CloneSpec.customization and CloneSpec.powerOn (customize and power on separately).
- `ReconfigVM_Task` with extraConfig "SET.guest.ipAddress" (alias "ip0") sets guest.ipAddress directly.
- Tasks run to completion inside the SOAP call; `method_delays` (e.g. {"CloneVM_Task": 2000}) delays the call
  itself, which is how the lab makes vCenter slow.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from lab.core import CACHE_DIR, LOOPBACK, ROOT, LabError, free_port, pid_alive

NAME = "vcsim"
REQUIRES = ()

SOURCE_DIR = ROOT / "lab" / "vcsim"
SOURCES = ("main.go", "go.mod")
GOCODE = Path("/usr/share/gocode/src")
LAB_USER = "administrator@vsphere.local"
READY = re.compile(r"vcsim ready (\S+) \((\d+) VMs, (\d+) hosts, (\d+) clusters\)")


def _go():
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if not go or not (GOCODE / "github.com/vmware/govmomi/simulator").is_dir():
        raise LabError(
            "lab: vcsim needs Go and govmomi's source: apt-get install -y golang-go golang-github-vmware-govmomi-dev"
        )
    return go


def build():
    """Path of the simulator binary, built (once per source change) into var/cache/vcsim."""
    go = _go()
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    digest.update(version.encode())
    govmomi_mod = GOCODE / "github.com/vmware/govmomi/go.mod"
    digest.update(str(govmomi_mod.stat().st_mtime_ns).encode())
    cache = CACHE_DIR / "vcsim"
    binary = cache / digest.hexdigest()[:16] / "vcsim"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():  # another process built it while we waited
            return binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".tmp{os.getpid()}")
        env = {
            **os.environ,
            "GOPROXY": "off",
            "GOFLAGS": "-mod=mod",
            "GOCACHE": str(cache / "go-build"),
            "GOPATH": str(cache / "gopath"),
            "CGO_ENABLED": "0",
        }
        result = subprocess.run(
            [go, "build", "-o", str(tmp), "."], cwd=SOURCE_DIR, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise LabError(f"lab: building the vCenter simulator failed:\n{result.stdout}{result.stderr}")
        tmp.replace(binary)
    return binary


def launch(
    lab,
    *,
    name=NAME,
    vms_per_pool=2,
    clusters=1,
    hosts_per_cluster=3,
    standalone_hosts=1,
    user=LAB_USER,
    password=None,
    delay_ms=0,
    method_delays=None,
    timeout=120.0,
):
    """Start a simulator (its log is logs/NAME.log) and return its info dict once it answers.

    `password=None` generates one; `user=""` accepts any login. `method_delays` maps SOAP method names to
    milliseconds. The benchmark uses this directly to get a large inventory; tests use the lab's own `vcsim`.
    """
    binary = build()
    port = free_port()
    if user and password is None:
        password = secrets.token_urlsafe(12)
    argv = [
        binary,
        f"-listen={LOOPBACK}:{port}",
        f"-vm={vms_per_pool}",
        f"-cluster={clusters}",
        f"-host={hosts_per_cluster}",
        f"-standalone-host={standalone_hosts}",
        f"-delay={delay_ms}",
    ]
    if method_delays:
        argv.append("-method-delay=" + ",".join(f"{method}={ms}" for method, ms in method_delays.items()))
    if user:
        argv += [f"-username={user}", f"-password={password}"]
    log = lab.log_path(name)
    offset = log.stat().st_size if log.is_file() else 0
    # The simulator keeps its datastores' files in TMPDIR: give it a directory of the lab's own.
    tmpdir = lab.run_dir / name / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    pid = lab.spawn(name, argv, env={"TMPDIR": str(tmpdir)})
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[offset:].decode(errors="replace") if log.is_file() else ""
        ready = READY.search(text)
        if ready:
            break
        if not pid_alive(pid):
            raise LabError(f"lab: {name} exited during start-up; see {log}:\n{lab.log_tail(name)}")
        if time.monotonic() > deadline:
            raise LabError(f"lab: {name} did not start within {timeout:.0f}s; see {log}")
        time.sleep(0.05)
    url = ready.group(1)
    _wait_answering(lab, name, f"https://{LOOPBACK}:{port}/about", pid, deadline)
    vm_count, host_count, cluster_count = (int(ready.group(i)) for i in (2, 3, 4))
    return {
        "pids": [pid],
        "url": url,
        "host": LOOPBACK,
        "port": port,
        "user": user,
        "password": password or "",
        "vm_count": vm_count,
        "host_count": host_count,
        "cluster_count": cluster_count,
        "datacenter": "DC0",
        "cluster": "DC0_C0",
        "resource_pool": "/DC0/host/DC0_C0/Resources",
        "vm_folder": "/DC0/vm",
        "datastore": "LocalDS_0",
        "network": "VM Network",
        "binary": str(binary),
        "log": str(log),
        "summary": f"vCenter simulator {url} ({vm_count} VMs, {host_count} hosts, {cluster_count} clusters)",
        "env": {
            "VCENTER_URL": url,
            "VCENTER_USER": user or "lab",
            "VCENTER_PASSWORD": password or "lab",
            "VCENTER_VERIFY_TLS": "false",
        },
    }


def _wait_answering(lab, name, url, pid, deadline):
    """Wait until the simulator answers HTTPS (its certificate is self-signed: not verified, loopback only)."""
    context = ssl._create_unverified_context()
    last = None
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except OSError as exc:
            last = exc
        if not pid_alive(pid):
            raise LabError(f"lab: {name} exited during start-up; see {lab.log_path(name)}:\n{lab.log_tail(name)}")
        if time.monotonic() > deadline:
            raise LabError(f"lab: {name} did not answer {url} ({last}); see {lab.log_path(name)}")
        time.sleep(0.05)


def start(lab):
    return launch(lab)
