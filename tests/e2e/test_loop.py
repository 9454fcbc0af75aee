"""The seed's workflow (5.1) through the whole loop: from a metric crossing the threshold to a new VM in the F5
pool, with nothing called by hand; and the operator's path (template, config, provisioning, manual triggers)."""

import pytest

from autoscaling.models import IpAllocation
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
from tests.e2e.conftest import firing_payload, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome


def test_a_load_above_the_threshold_adds_a_vm_and_the_alert_resolves(e2e):
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=300, max_instances=4)
    seeded = e2e.seed(plan)
    vm_port = e2e.lab.info("metrics")["vm_port"]
    seeded_targets = {f"{address}:{vm_port}" for address in plan.monitored}
    assert set(seeded.config.monitored_instances) == seeded_targets
    wait_for("the seeded VMs to be scraped", lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded_targets, "up"))

    # 160 % of one VM over two VMs: 80 % each, above the 70 % threshold. Nothing else is called from here on.
    e2e.load(plan, 160)
    event = e2e.wait_event(plan, timeout=60)
    assert event.status == Status.SUCCEEDED, (event.error, e2e.console(event))
    assert event.source == ScaleOutEvent.Source.ALERT and event.alert_name
    assert event.notification.status == "firing"

    # The pipeline cloned a VM with an address of the pool and put it into the F5 pool.
    (ip,) = event.vm_ips
    (name,) = event.vm_names
    vm = e2e.vms(plan)[name]
    assert vm.powered_on and vm.ip_address == ip
    member = e2e.f5_members(plan)[f"{ip}:8080"]
    assert member["state"] == "up"
    allocation = IpAllocation.objects.get(pool=seeded.pool, address=ip)
    assert allocation.state == IpAllocation.State.IN_USE and allocation.event_id == event.pk
    steps = {a.step: a.status for a in EventAction.objects.filter(event=event)}
    assert steps[EventAction.Step.HEALTH_CHECK] == EventAction.Status.SUCCEEDED

    # The portal made the new VM a scrape target; its node exporter answers; the load spreads over three VMs.
    new_target = f"{ip}:{vm_port}"
    wait_for(
        "the new VM to be scraped",
        lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded_targets | {new_target}, "up"),
        # A provisioning pass, Prometheus' file discovery and a scrape: seconds, more on a loaded CI machine.
        timeout=60,
    )
    state = e2e.metrics.state()["services"][plan.service]
    assert state["powered_on"] == 3

    # 160 / 3 = 53 %: the alert resolves in Prometheus, and Alertmanager tells the portal.
    wait_for("the alert to resolve", lambda: not e2e.prometheus_alerts(plan), timeout=30)
    wait_for(
        "the resolved notification",
        lambda: AlertNotification.objects.filter(service_name=plan.service, status="resolved").exists(),
        timeout=30,
    )
    # One scale-out only: repeats of the same alert were duplicates or inside the cooldown.
    assert [e.pk for e in e2e.events(plan)] == [event.pk]
    outcomes = set(ScalingDecision.objects.filter(service_name=plan.service).values_list("outcome", flat=True))
    assert Outcome.SCALE_OUT in outcomes and outcomes <= {
        Outcome.SCALE_OUT,
        Outcome.DUPLICATE,
        Outcome.COOLDOWN,
        Outcome.ALREADY_SCALING,
        Outcome.RESOLVED,
    }


def test_the_operators_workflow_from_template_to_manual_and_webhook_scale_outs(e2e, admin_client):
    from autoscaling.models import AutoscalingConfig
    from autoscaling.provisioning import inputs

    plan = e2e.plan(instances=1, threshold=70, duration_seconds=2, cooldown_seconds=0, max_instances=4)
    seeded = e2e.seed(plan)

    # Template: cloned from a simulator VM, ready in the portal and a template in vCenter.
    template = seeded.template
    assert template.is_ready and template.source_vm_name == plan.source_vm
    assert e2e.vcenter.find_vm(template.name).is_template

    # Config: enabled and pushed.
    config = seeded.config
    assert config.enabled and config.sync_state == AutoscalingConfig.SyncState.SYNCED, config.sync_error

    # Prometheus evaluates its rule (the lab's 5 s rate window), Alertmanager routes its labels to its receiver,
    # and Jenkins has its job, enabled.
    rule = e2e.prometheus_rule(plan)
    assert rule is not None and rule["labels"]["autoscale"] == "true"
    assert "[5s]" in rule["query"] and rule["query"].endswith("> 70")
    spec = inputs.service_spec(config)
    assert e2e.amtool_route(service=plan.service, autoscale="true") == spec.receiver_name
    jobs = e2e.jenkins.jobs()
    assert config.jenkins_job_name in jobs and not jobs[config.jenkins_job_name]["disabled"]

    # A manual scale-out through the API (the seed's "manual webhook trigger test").
    response = admin_client.post(
        "/api/autoscaling/events", {"service_name": plan.service, "reason": "e2e"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    manual = e2e.wait_event(plan, index=0)
    assert manual.pk == response.json()["id"] and manual.source == ScaleOutEvent.Source.MANUAL
    assert manual.status == Status.SUCCEEDED, (manual.error, e2e.console(manual))

    # Alertmanager's webhook, posted as curl would.
    answer = e2e.post_webhook(plan.service, firing_payload(plan.service))
    assert answer.status_code == 202 and answer.json()["status"] == "accepted", answer.text
    alerted = e2e.wait_event(plan, index=1)
    assert alerted.source == ScaleOutEvent.Source.ALERT
    assert alerted.status == Status.SUCCEEDED, (alerted.error, e2e.console(alerted))

    # Each ran the pipeline: a VM in the simulator and a member in the F5 pool per event, names never colliding.
    names = manual.vm_names + alerted.vm_names
    ips = manual.vm_ips + alerted.vm_ips
    assert names == [f"{plan.service}-001", f"{plan.service}-002"]
    vms = e2e.vms(plan)
    assert {name: (vms[name].powered_on, vms[name].ip_address) for name in names} == {
        name: (True, ip) for name, ip in zip(names, ips, strict=True)
    }
    members = e2e.f5_members(plan)
    assert sorted(members) == sorted(f"{ip}:8080" for ip in ips)
    assert all(member["state"] == "up" for member in members.values())
    for event in (manual, alerted):
        build = e2e.jenkins.build(event.jenkins_job, event.build_number)
        assert build["result"] == "SUCCESS"
