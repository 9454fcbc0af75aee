"""`manage.py seed_demo` (what `make run` runs on every start) and `manage.py simulate_load`."""

import io
import os

import pytest
from django.core.management import CommandError, call_command

from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
from events.models import ScaleOutEvent, ScalingDecision
from templates_app.models import VMTemplate
from tests.e2e.conftest import _kill, firing_payload, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def test_seed_demo_is_idempotent_and_simulate_load_sets_the_load(e2e):
    plan = e2e.plan(instances=2)
    args = ["--run-dir", str(e2e.lab.run_dir), "--service", plan.service, "--network", plan.network]
    out = io.StringIO()
    try:
        call_command("seed_demo", *args, stdout=out)
        first = AutoscalingConfig.objects.get(service_name=plan.service)
        call_command("seed_demo", *args, stdout=out)
    finally:
        pid_file = e2e.lab.run_dir / "vm-agent.pid"
        _kill(int(pid_file.read_text().split()[0]))
        pid_file.unlink()

    config = AutoscalingConfig.objects.get(service_name=plan.service)
    assert config.pk == first.pk and config.enabled
    assert config.sync_state == AutoscalingConfig.SyncState.SYNCED, config.sync_error
    assert VMTemplate.objects.filter(name__startswith=plan.template_name).count() == 1
    assert IpPool.objects.filter(name=plan.pool_name).count() == 1
    assert config.ip_pool.network == plan.network and not config.ip_pool.ping_check
    vm_port = e2e.lab.info("metrics")["vm_port"]
    assert config.monitored_instances == [f"{address}:{vm_port}" for address in plan.monitored]
    assert e2e.metrics.state()["services"][plan.service]["powered_on"] == 2
    assert e2e.prometheus_rule(plan) is not None
    assert f"simulate_load {plan.service}" in out.getvalue()

    out = io.StringIO()
    call_command("simulate_load", plan.service, "150", "--run-dir", str(e2e.lab.run_dir), stdout=out)
    state = e2e.metrics.state()["services"][plan.service]
    assert state["cpu_percent"] == 150.0
    assert "75.0%" in out.getvalue()
    with pytest.raises(CommandError, match="percent"):
        call_command("simulate_load", plan.service, "-5", "--run-dir", str(e2e.lab.run_dir))
    with pytest.raises(CommandError, match="no VMs of service nope.*known: .*" + plan.service):
        call_command("simulate_load", "nope", "50", "--run-dir", str(e2e.lab.run_dir))
    assert e2e.metrics.state()["services"][plan.service]["cpu_percent"] == 150.0
    with pytest.raises(CommandError, match="not running"):
        call_command("simulate_load", plan.service, "50", "--run-dir", os.devnull + "-no-lab")


def test_seed_demo_reset_returns_the_demo_to_its_starting_state(e2e):
    plan = e2e.plan(instances=2)
    seeded = e2e.seed(plan)
    assert e2e.post_webhook(plan.service, firing_payload(plan.service)).status_code == 202
    event = e2e.wait_event(plan, timeout=60)
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, e2e.console(event))
    (clone,) = event.vm_names
    assert clone in e2e.vms(plan) and e2e.f5_members(plan)

    out = io.StringIO()
    args = ["--run-dir", str(e2e.lab.run_dir), "--service", plan.service, "--network", plan.network, "--reset"]
    try:
        call_command("seed_demo", *args, stdout=out)
    finally:
        pid_file = e2e.lab.run_dir / "vm-agent.pid"
        _kill(int(pid_file.read_text().split()[0]))
        pid_file.unlink()

    assert f"Demo {plan.service} reset: 1 scale-out events" in out.getvalue() and clone in out.getvalue()
    assert not ScaleOutEvent.objects.filter(config__service_name=plan.service).exists()
    assert not ScalingDecision.objects.filter(service_name=plan.service).exists()
    config = AutoscalingConfig.objects.get(service_name=plan.service)
    assert config.pk != seeded.config.pk and config.sync_state == AutoscalingConfig.SyncState.SYNCED
    assert not IpAllocation.objects.filter(pool=config.ip_pool).exists()
    assert clone not in e2e.vms(plan) and not e2e.f5_members(plan)
    # The seed's provisioning pass took the clone out of the scrape targets: Prometheus scrapes the seeded VMs only.
    # (The lab's VM agent may keep the clone's node exporter registered in the metrics stand-in: it forgets what it
    # booted when the seed restarts it; nothing scrapes it.)
    seeded_targets = {f"{address}:{e2e.lab.info('metrics')['vm_port']}" for address in plan.monitored}
    wait_for(
        "only the seeded VMs as scrape targets",
        lambda: set(e2e.scrape_targets(plan)) == seeded_targets,
        timeout=30,
    )
    assert e2e.metrics.state()["services"][plan.service]["cpu_percent"] == 5.0
