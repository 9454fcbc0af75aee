"""Benchmark of the fleet's reconcile (issue 13): 1,000 VMs in the vCenter simulator, 1,000 members in F5.

    .venv/bin/python benchmarks/bench_fleet.py [--services 10]     # ~30 s, loopback only

Starts a simulator of 1,000 VMs and the F5 stand-in in a temp lab, and a SQLite database in the same dir. The VMs
are the instances of --services services (default 10, one F5 pool each); every VM carries the ownership marker of
its instance, every instance an IP allocation in use and an up member in its service's pool. Then measures
`fleet.reconcile.fleet_reconcile()` as the periodic task runs it (one vCenter and one F5 session per pass):
1. the first pass (records every instance's UUID, power, heartbeat and member state) and the steady state
   (nothing changed), with the vCenter requests (RetrievePropertiesEx, and every HTTP request of the pass) and the
   F5 requests (member reads, and every request of the pass, counted by the stand-in);
2. a pass after LOST VMs were destroyed behind the portal's back (lost, IPs released, members removed).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integrations.f5 import F5Client  # noqa: E402
from integrations.vcenter import VcenterClient  # noqa: E402
from lab.components import vcsim  # noqa: E402
from lab.components.f5 import F5StandinControl  # noqa: E402
from lab.core import Lab  # noqa: E402

VMS = 1000  # the simulator makes VMS/2 per resource pool and VMS/2 on its standalone host
LOST = 10
REPEAT = 7
GOAL_SECONDS = 2.0
PORT = 8080


def address(index):
    """Loopback addresses: pool members are never contacted, but stay on 127.0.0.0/8 all the same."""
    return f"127.1.{index // 200}.{10 + index % 200}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=10, help="services (one F5 pool each) sharing the VMs")
    services = parser.parse_args().services
    run_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    lab = Lab(run_dir / "lab")
    try:
        started = time.perf_counter()
        vc_info = vcsim.launch(lab, vms_per_pool=VMS // 2)
        lab.state["components"]["vcsim"] = vc_info  # so lab.stop() stops it
        f5_info = lab.ensure("f5")
        print(
            f"simulator with {vc_info['vm_count']} VMs and the F5 stand-in: started in "
            f"{(time.perf_counter() - started) * 1000:.0f} ms"
        )
        os.environ.update(
            LAB_ENV_FILE="",
            DATABASE_URL=f"sqlite:///{run_dir / 'db.sqlite3'}",
            DJANGO_SETTINGS_MODULE="vmautoscale.settings",
            LOG_LEVEL="WARNING",
            **vc_info["env"],
            **f5_info["env"],
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
        from fleet.models import ManagedInstance
        from fleet.reconcile import fleet_reconcile
        from templates_app.models import VMTemplate

        call_command("migrate", verbosity=0)

        # The inventory: VMS instances over the services, each VM marked, each member up.
        setup = time.perf_counter()
        vc = VcenterClient(vc_info["url"], vc_info["user"], vc_info["password"], verify_tls=False, timeout=60)
        vms = [vm for vm in vc.list_vm_facts() if not vm.is_template][:VMS]
        template = VMTemplate.objects.create(name="bench-template", status=VMTemplate.Status.READY)
        per_service = len(vms) // services
        control = F5StandinControl(f5_info["control_url"])
        control.configure(up_delay=0.0)
        f5 = F5Client(f5_info["url"], f5_info["user"], f5_info["password"], verify_tls=False)
        instances = []
        for s in range(services):
            ip_pool = IpPool.objects.create(
                name=f"bench-{s}",
                network="127.1.0.0/16",
                first_address=address(s * per_service),
                last_address=address((s + 1) * per_service - 1),
                ping_check=False,
            )
            config = AutoscalingConfig.objects.create(
                service_name=f"bench-{s:02d}",
                template=template,
                max_instances=per_service,
                ip_pool=ip_pool,
                f5_pool=f"bench_{s:02d}",
                f5_member_port=PORT,
            )
            control.create_pool(config.f5_pool)
            for i in range(s * per_service, (s + 1) * per_service):
                allocation = IpAllocation.objects.create(
                    pool=ip_pool, address=address(i), state=IpAllocation.State.IN_USE, vm_name=vms[i].name
                )
                instances.append(
                    ManagedInstance(
                        config=config,
                        state=ManagedInstance.State.IN_SERVICE,
                        vm_name=vms[i].name,
                        ip_address=address(i),
                        ip_allocation=allocation,
                        f5_member=f"{address(i)}:{PORT}",
                    )
                )
        ManagedInstance.objects.bulk_create(instances)
        for vm, instance in zip(vms, ManagedInstance.objects.order_by("pk"), strict=False):
            vc.set_custom_value(vm.moid, instance.pk)
            f5.add_member(instance.config.f5_pool, "Common", instance.ip_address, PORT)
        f5.close()
        members = sum(len(pool["members"]) for pool in control.state()["pools"].values())
        print(
            f"inventory: {len(instances)} instances of {services} services, {len(vms)} marked VMs, {members} pool "
            f"members in {services} pools: set up in {time.perf_counter() - setup:.1f} s"
        )

        def one_pass():
            control.reset()
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                result = fleet_reconcile()
                seconds = time.perf_counter() - start
            assert result.ok, result.errors
            f5_calls = control.calls()
            member_reads = [c for c in f5_calls if c["method"] == "GET" and c["path"].endswith("/members")]
            return seconds, result, len(queries), len(f5_calls), len(member_reads)

        def show(what, figures):
            seconds, result, queries, f5_calls, member_reads = figures
            print(
                f"{what:44} {seconds * 1000:7.0f} ms  {result.instances} instances / {result.vms} VMs, "
                f"{result.vcenter_requests} RetrievePropertiesEx, {member_reads} F5 member reads "
                f"({f5_calls} F5 requests with login and logout), {queries} SQL queries, "
                f"{len(result.changes)} changes"
            )

        first = one_pass()
        show("first pass (records every instance's facts)", first)
        assert all(i.vcenter_uuid for i in ManagedInstance.objects.all())
        steady = [one_pass() for _ in range(REPEAT)]
        samples = [figures[0] * 1000 for figures in steady]
        show("steady pass (nothing changed), last", steady[-1])
        median = statistics.median(samples)
        print(f"steady pass: {median:.0f} ms median ({min(samples):.0f}-{max(samples):.0f}) of {REPEAT}")

        # The vCenter HTTP requests of a whole pass as the task makes it: login (3) + read (1) + logout (1).
        probe = VcenterClient(vc_info["url"], vc_info["user"], vc_info["password"], verify_tls=False, timeout=60)
        probe.list_vm_facts()
        probe.close()
        print(f"vCenter HTTP requests per pass: {probe.round_trips} ({dict(probe.calls)})")

        for vm in vms[:LOST]:
            vc.power_off(vm.moid)
            vc.destroy_vm(vm.moid)
        lost = one_pass()
        show(f"pass after {LOST} VMs were destroyed", lost)
        assert lost[1].lost == LOST, lost[1].changes
        released = IpAllocation.objects.filter(state=IpAllocation.State.RELEASED).count()
        left = sum(len(pool["members"]) for pool in control.state()["pools"].values())
        print(f"  lost {lost[1].lost}, IPs released {released}, pool members left {left} of {members}")
        vc.close()

        verdict = "met" if median / 1000 < GOAL_SECONDS and first[0] < GOAL_SECONDS else "MISSED"
        print(
            f"goal: one reconcile of {len(vms)} VMs and {members} pool members in under {GOAL_SECONDS:g} s with one "
            f"vCenter round trip and one F5 read per pool: {verdict} (load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs)"
        )
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
