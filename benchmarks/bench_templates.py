"""Benchmark of the vCenter VM list behind GET /api/templates/vms (issue 3), against the vCenter simulator.

    .venv/bin/python benchmarks/bench_templates.py      # ~30 s, loopback only

Starts two simulators of its own (the default 4-VM inventory and one of VMS VMs) in a temp lab and a SQLite
database in the same dir, then measures:
1. VcenterClient.list_vms() alone, and the vCenter requests per list for both inventory sizes (must not grow);
2. GET /api/templates/vms?page_size=VMS through Django (middleware, session auth, DRF, JSON), in-process test
   client, one VcenterClient per request as in production (login, one RetrievePropertiesEx, logout).
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integrations.vcenter import VcenterClient  # noqa: E402
from lab.components import vcsim  # noqa: E402
from lab.core import Lab  # noqa: E402

VMS = 1000  # the simulator makes VMS/2 per resource pool and VMS/2 on its standalone host
REPEAT = 7
GOAL_SECONDS = 1.0


def timed(fn, repeat=REPEAT):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def report(what, figures):
    median, low, high = figures
    print(f"{what:64} {median:8.1f} ms median ({low:.1f}-{high:.1f})")


def simulator_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(fn, pid, repeat=REPEAT):
    """CPU time (ms) of one call in this process and in the simulator: what the wall time is made of."""
    ours, theirs = time.process_time(), simulator_cpu_seconds(pid)
    for _ in range(repeat):
        fn()
    ours = (time.process_time() - ours) / repeat * 1000
    theirs = (simulator_cpu_seconds(pid) - theirs) / repeat * 1000
    return ours, theirs


def client_for(info):
    return VcenterClient(info["url"], info["user"], info["password"], verify_tls=False, timeout=60)


def requests_per_list(info):
    """vCenter HTTP requests of one list as the portal makes it: login + list + logout, and of the list alone."""
    client = client_for(info)
    vms = client.list_vms()
    before = client.round_trips
    client.list_vms()
    list_only = client.round_trips - before
    client.close()
    return len(vms), list_only, client.round_trips - list_only


def main():
    run_dir = Path(tempfile.mkdtemp(prefix="bench-templates-"))
    lab = Lab(run_dir / "lab")
    try:
        requests = []
        for vms_per_pool in (2, VMS // 2):
            started = time.perf_counter()
            info = vcsim.launch(lab, vms_per_pool=vms_per_pool)
            lab.state["components"]["vcsim"] = info  # so lab.stop() stops it
            print(f"simulator with {info['vm_count']} VMs: started in {(time.perf_counter() - started) * 1000:.0f} ms")
            requests.append(requests_per_list(info))
            if vms_per_pool != VMS // 2:
                lab.stop(["vcsim"])
        large = info
        for count, list_only, per_request in requests:
            print(
                f"vCenter requests with {count:5d} VMs: {list_only} per list_vms(), "
                f"{per_request} per API request (login 3 + list + logout)"
            )
        client = client_for(large)
        client.list_vms()
        report(f"VcenterClient.list_vms() of {large['vm_count']} VMs (session open)", timed(client.list_vms))
        ours, theirs = cpu_per_call(client.list_vms, large["pids"][0])
        print(f"  CPU per list: {ours:.0f} ms in Python (pyvmomi parsing), {theirs:.0f} ms in the simulator")
        client.close()

        os.environ.update(
            LAB_ENV_FILE="",
            DATABASE_URL=f"sqlite:///{run_dir / 'db.sqlite3'}",
            DJANGO_SETTINGS_MODULE="vmautoscale.settings",
            LOG_LEVEL="WARNING",
            VCENTER_URL=large["url"],
            VCENTER_USER=large["user"],
            VCENTER_PASSWORD=large["password"],
            VCENTER_VERIFY_TLS="false",
        )
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
        http = Client()
        http.force_login(user)

        def get_all():
            response = http.get("/api/templates/vms", {"page_size": VMS})
            assert response.status_code == 200, response.content[:300]
            assert response.json()["count"] == large["vm_count"]

        def get_page():
            assert http.get("/api/templates/vms").status_code == 200

        def get_filtered():
            assert http.get("/api/templates/vms", {"name": "DC0_H0_VM4", "power_state": "poweredOn"}).json()["count"]

        get_all()
        all_vms = timed(get_all)
        report(f"GET /api/templates/vms?page_size={VMS} ({large['vm_count']} VMs in one page)", all_vms)
        ours, theirs = cpu_per_call(get_all, large["pids"][0])
        print(f"  CPU per request: {ours:.0f} ms in the portal, {theirs:.0f} ms in the simulator")
        report("GET /api/templates/vms (first page of 50)", timed(get_page))
        report("GET /api/templates/vms?name=DC0_H0_VM4&power_state=poweredOn", timed(get_filtered))
        verdict = "met" if all_vms[0] / 1000 < GOAL_SECONDS else "MISSED"
        load = os.getloadavg()[0]
        print(
            f"goal: all {large['vm_count']} VMs in under {GOAL_SECONDS:g} s (median): {verdict} "
            f"(load average {load:.1f} on {os.cpu_count()} CPUs)"
        )
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
