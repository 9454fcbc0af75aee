"""The demo of `make run`: one service the lab's real Prometheus and Alertmanager watch, scaled out for real.

`demo_seed` makes (idempotently, through the apps' services) a template from a simulator VM, an IP pool in a
loopback range, and an enabled config for a service whose monitored instances are VMs of the metrics stand-in; it
prepares what only the lab needs (demo.wiring: the F5 pool in the F5 stand-in, the Jenkins stand-in told to run the
Jenkinsfile, the VM agent that "boots" new VMs' node exporters) and runs a provisioning pass. `demo_load_set` then
sets the service's load: Prometheus fires, Alertmanager calls the portal, the pipeline clones a VM and adds it to the
F5 pool, the portal puts its address into the scrape targets, the load spreads over one more VM and the alert
resolves.

Tests use the same functions with their own service name and a random loopback network (the metrics stand-in's VMs
all listen on port 9100, shared by every lab on the machine).
"""

import ipaddress
import logging
import re
from dataclasses import dataclass, field, replace

from django.db import transaction
from django.utils.translation import gettext as _

from demo.wiring import lab_addresses_taken, lab_metrics, lab_pipeline_prepare
from lab.wiring import vm_agent_ensure

logger = logging.getLogger(__name__)


class DemoError(Exception):
    """The demo could not be seeded; the message says what is wrong."""


SERVICE = "demo-web"
NETWORK = "127.0.100.0/24"
# When NETWORK is taken (another lab's VMs on port 9100), the next free one of 127.0.101.0/24 ... 127.0.199.0/24.
NETWORK_CANDIDATES = [f"127.0.{n}.0/24" for n in range(100, 200)]
SOURCE_VM = "DC0_H0_VM0"


@dataclass
class DemoPlan:
    """What the demo is made of; every name follows from the service and the network."""

    service: str = SERVICE
    network: str = NETWORK
    instances: int = 2
    threshold: float = 70.0
    duration_seconds: int = 2
    cooldown_seconds: int = 60
    # Idle: below 20 % for 10 s removes the newest VM the portal added (the seeded ones are adopted: protected),
    # once it has warmed up for the cooldown; then another after the scale-in cooldown.
    scale_in_threshold: float | None = 20.0
    scale_in_duration_seconds: int = 10
    scale_in_cooldown_seconds: int = 30
    max_instances: int = 4
    source_vm: str = SOURCE_VM
    metric: str = "cpu"
    extra: dict = field(default_factory=dict)  # more config fields (tests: a custom pool size, a bad template...)

    @property
    def net(self):
        return ipaddress.IPv4Network(self.network, strict=False)

    @property
    def template_name(self):
        return f"{self.service}-template"

    @property
    def pool_name(self):
        return f"{self.service}-pool"

    @property
    def f5_pool(self):
        return f"pool_{self.service.replace('-', '_')}"

    def host(self, n):
        return str(self.net.network_address + n)

    @property
    def monitored(self):
        """The seeded VMs: .2, .3, ... of the network."""
        return [self.host(2 + i) for i in range(self.instances)]

    @property
    def pool_range(self):
        return self.host(10), self.host(10 + max(self.max_instances, 1) * 2 + 9)


@dataclass
class DemoResult:
    config: object
    template: object
    pool: object
    run: object


def demo_template_ensure(*, lab, plan, user=None):
    """A ready template that exists in the simulator, cloned from a simulator VM by the templates service.

    The simulator forgets everything when the lab restarts while the portal's database remembers: a template row
    vCenter no longer has is skipped and a new one made under the next free name (`-2`, `-3`, ...).
    """
    from templates_app import services as template_services
    from templates_app.models import VMTemplate

    lab.info("vcsim")
    in_vcenter = {vm.name for vm in template_services.vcenter_vms_list(include_templates=True)}
    for n in range(1, 100):
        name = plan.template_name if n == 1 else f"{plan.template_name}-{n}"
        template = VMTemplate.objects.filter(name=name).first()
        if template is not None:
            if template.is_ready and name in in_vcenter:
                return template
            continue
        if name in in_vcenter:
            continue
        template = template_services.template_create(
            source_vm=plan.source_vm, name=name, method=VMTemplate.Method.CLONE, user=user, queue=False
        )
        # Converted here rather than by the task cluster, which `make run` starts after the seed: no task is queued,
        # and the conversion lock keeps any other run from cloning it at the same time (it would find the name
        # taken); whichever run converts, the row is waited for.
        template_services.template_convert(template_id=template.pk)
        template = template_services.template_wait(template_id=template.pk)
        if not template.is_ready:
            raise DemoError(
                _("The demo template %(name)s is %(status)s: %(error)s")
                % {"name": template.name, "status": template.get_status_display(), "error": template.last_error}
            )
        return template
    raise DemoError(_("No free name for the demo template %(name)s.") % {"name": plan.template_name})


def demo_pool_ensure(*, plan, user=None):
    from autoscaling import services as autoscaling_services
    from autoscaling.models import IpPool

    pool = IpPool.objects.filter(name=plan.pool_name).first()
    if pool is not None:
        return pool
    first, last = plan.pool_range
    return autoscaling_services.ip_pool_create(
        data={
            "name": plan.pool_name,
            "network": str(plan.net),
            "first_address": first,
            "last_address": last,
            "gateway": plan.host(1),
            "dns_servers": [],
            # Every 127.x address answers a ping on this machine: the check would skip them all.
            "ping_check": False,
            "description": _("Addresses of the new VMs of the demo service %(service)s (loopback).")
            % {"service": plan.service},
        },
        user=user,
    )


def demo_config_ensure(*, lab, plan, template, pool, user=None):
    from autoscaling import services as autoscaling_services
    from autoscaling.models import AutoscalingConfig

    vm_port = lab.info("metrics")["vm_port"]
    data = {
        "service_name": plan.service,
        "description": _("Demo service: its VMs are the lab's metrics stand-in; `manage.py simulate_load` loads it."),
        "template": template,
        "enabled": True,
        "metric": plan.metric,
        "threshold": plan.threshold,
        "duration_seconds": plan.duration_seconds,
        "min_instances": 1,
        "max_instances": plan.max_instances,
        "scale_out_step": 1,
        "cooldown_seconds": plan.cooldown_seconds,
        "scale_in_threshold": plan.scale_in_threshold,
        "scale_in_duration_seconds": plan.scale_in_duration_seconds,
        "scale_in_cooldown_seconds": plan.scale_in_cooldown_seconds,
        "cluster": "DC0_C0",
        "ip_pool": pool,
        "f5_pool": plan.f5_pool,
        "f5_member_port": 8080,
        "monitored_instances": [f"{address}:{vm_port}" for address in plan.monitored],
        **plan.extra,
    }
    config = AutoscalingConfig.objects.filter(service_name=plan.service).first()
    if config is None:
        return autoscaling_services.config_create(data=data, user=user)
    changed = {k: v for k, v in data.items() if getattr(config, k) != v}
    if changed:
        return autoscaling_services.config_update(config=config, data=changed, user=user)
    return config


def _plan_addresses(plan):
    """Every address the demo's VMs listen on: the seeded ones and the IP pool's (the VMs a scale-out adds)."""
    first, last = (ipaddress.IPv4Address(a) for a in plan.pool_range)
    return plan.monitored + [str(first + i) for i in range(int(last) - int(first) + 1)]


@dataclass
class DemoNetwork:
    network: str
    kept: bool = False  # the demo's IP pool already had it (an earlier start)
    skipped: dict = field(default_factory=dict)  # network -> the addresses another program holds there


def demo_network_choose(*, lab, plan, requested=None):
    """The demo's network: the requested one, else the one its IP pool has (kept across starts), else the first free.

    "Free" means no other program holds port 9100 on its addresses (another lab on this machine may).
    """
    from autoscaling.models import IpPool

    pool = IpPool.objects.filter(name=plan.pool_name).first()
    current = str(ipaddress.IPv4Network(pool.network, strict=False)) if pool is not None else None
    if requested:
        requested = str(ipaddress.IPv4Network(requested, strict=False))
        if current and current != requested:
            raise DemoError(
                _(
                    "The demo uses %(current)s; to move it to %(requested)s start it over: "
                    "manage.py seed_demo --reset --network %(requested)s"
                )
                % {"current": current, "requested": requested}
            )
    chosen = requested or current
    if chosen:
        taken = lab_addresses_taken(lab, addresses=_plan_addresses(_replan(plan, chosen)), service=plan.service)
        if taken:
            raise DemoError(
                _(
                    "Another program holds %(addresses)s in the demo's network %(network)s (another lab?). Stop it, "
                    "or start the demo over in a free network: manage.py seed_demo --reset"
                )
                % {"addresses": ", ".join(taken[:3]), "network": chosen}
            )
        return DemoNetwork(network=chosen, kept=chosen == current)
    skipped = {}
    for candidate in NETWORK_CANDIDATES:
        taken = lab_addresses_taken(lab, addresses=_plan_addresses(_replan(plan, candidate)), service=plan.service)
        if not taken:
            return DemoNetwork(network=candidate, skipped=skipped)
        skipped[candidate] = taken
    raise DemoError(
        _("Every network from %(first)s to %(last)s is taken; choose one with manage.py seed_demo --network")
        % {"first": NETWORK_CANDIDATES[0], "last": NETWORK_CANDIDATES[-1]}
    )


def _replan(plan, network):
    return replace(plan, network=network)


def demo_seed(*, lab, plan=None, user=None, start_vm_agent=True, provision=True):
    """Seed (or repair) the demo; safe to run again. Returns what it made and the provisioning pass."""
    from autoscaling import services as autoscaling_services

    plan = plan or DemoPlan()
    metrics = lab_metrics(lab)
    vm_port = lab.info("metrics")["vm_port"]
    for i, address in enumerate(plan.monitored):
        metrics.register_vm(address, plan.service, powered_on=True, port=vm_port, name=f"{plan.service}-seed-{i + 1}")
    template = demo_template_ensure(lab=lab, plan=plan, user=user)
    with transaction.atomic():
        pool = demo_pool_ensure(plan=plan, user=user)
        config = demo_config_ensure(lab=lab, plan=plan, template=template, pool=pool, user=user)
    # Before the pass creates the job: no build of it ever runs without the pipeline (the stand-ins start empty).
    lab_pipeline_prepare(lab, job=config.jenkins_job_name, f5_pool=plan.f5_pool)
    if start_vm_agent:
        # The agent for every lab address (as `python -m lab up` starts it): it boots other services' VMs too.
        vm_agent_ensure(lab)
    run = None
    if provision:
        run = autoscaling_services.provisioning_run(reason=f"demo {plan.service} seeded", wait=120)
    config.refresh_from_db()
    return DemoResult(config=config, template=template, pool=pool, run=run)


@dataclass
class DemoReset:
    events: int = 0
    instances: int = 0
    vms: list = field(default_factory=list)  # simulator VMs destroyed
    members: int = 0  # F5 pool members removed


def demo_reset(*, lab, plan, user=None):
    """Return the demo to its starting state; the next `demo_seed` makes it again.

    Deletes its events (with their steps and decisions), notifications, fleet instances, config and IP pool (with
    its allocations); destroys the VMs its scale-outs cloned in the simulator (`<service>-NNN`),
    empties its F5 pool and takes its VMs out of the metrics stand-in, back at the idle load. The template stays:
    the seed uses it again.
    """
    from autoscaling.models import AutoscalingConfig, IpPool
    from common.clients import f5_client, vcenter_client
    from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
    from fleet.models import ManagedInstance
    from lab.standins.metrics import DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_PERCENT

    result = DemoReset()
    lab.info("vcsim")
    with vcenter_client() as client:
        for vm in client.list_vms():
            if re.fullmatch(rf"{re.escape(plan.service)}-\d+", vm.name) and not vm.is_template:
                client.destroy_vm(vm.moid)
                result.vms.append(vm.name)
    lab.info("f5")
    f5 = f5_client()
    try:
        if f5.pool_exists(plan.f5_pool):
            for member in f5.list_members(plan.f5_pool):
                f5.remove_member(plan.f5_pool, member.partition, member.address, member.port, delete_node=True)
                result.members += 1
    finally:
        f5.close()
    metrics = lab_metrics(lab)
    for vm in metrics.state()["vms"]:
        if vm["service"] == plan.service:
            metrics.unregister_vm(vm["address"])
    metrics.set_load(plan.service, cpu_percent=DEFAULT_CPU_PERCENT, memory_percent=DEFAULT_MEMORY_PERCENT)
    with transaction.atomic():
        config = AutoscalingConfig.objects.filter(service_name=plan.service).first()
        if config is not None:
            result.events = ScaleOutEvent.objects.filter(config=config).count()
            ScalingDecision.objects.filter(config=config).delete()
            ScaleOutEvent.objects.filter(config=config).delete()
            AlertNotification.objects.filter(config=config).delete()
            result.instances, _deleted = ManagedInstance.objects.filter(config=config).delete()
            config.delete()
        IpPool.objects.filter(name=plan.pool_name).delete()
    logger.info("demo %s reset by %s: %s", plan.service, getattr(user, "username", None) or "system", result)
    return result


def demo_load_set(*, lab, service, percent, metric="cpu"):
    """Set a service's total load in the metrics stand-in (percent of one VM, shared by its powered-on VMs)."""
    key = "memory_percent" if metric == "memory" else "cpu_percent"
    metrics = lab_metrics(lab)
    # A load for a service without VMs would change nothing that Prometheus sees: refuse it, naming the known ones.
    known = sorted(name for name, state in metrics.state()["services"].items() if state["vms"])
    if service not in known:
        raise DemoError(
            _("The lab has no VMs of service %(service)s (known: %(known)s); seed one with manage.py seed_demo.")
            % {"service": service, "known": ", ".join(known) or _("none")}
        )
    return metrics.set_load(service, **{key: float(percent)})
