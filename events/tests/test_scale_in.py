"""Scale-in decisions against the lab's real Alertmanager and Prometheus: a scale-in alert (label direction="in")
through the webhook and the evaluator, which instances go, min, a scale-out in flight, warm-up, the scale-in
cooldown, and target tracking's 0.9 x target rule over the scale-in duration.

Alerts are posted straight to Alertmanager's API (as Prometheus does); target tracking reads a custom expression
from the real Prometheus.
"""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from events import evaluator
from events.models import ScaleOutEvent, ScalingDecision
from events.tests.conftest import firing_payload, post_webhook
from events.trigger import event_jenkins_parameters
from fleet.models import ManagedInstance
from integrations.alertmanager import AlertmanagerClient
from tests.browser.support import random_service_name

pytestmark = [pytest.mark.lab, pytest.mark.django_db]
Outcome = ScalingDecision.Outcome
Action = ScaleOutEvent.Action
State = ManagedInstance.State


@pytest.fixture
def monitoring(lab_settings, webhook_settings):
    return lab_settings("prometheus", "alertmanager")


@pytest.fixture
def alertmanager(monitoring):
    return AlertmanagerClient(monitoring.ALERTMANAGER_URL, timeout=5)


@pytest.fixture
def make_config(make_config):
    def make(service_name, **fields):
        fields.setdefault("monitored_instances", [])
        fields.setdefault("threshold", 80)
        return make_config(service_name, **fields)

    return make


def instance(config, name, *, minutes_ago, **fields):
    """An instance the portal created, in service since `minutes_ago`."""
    fields.setdefault("template", config.template)
    return ManagedInstance.objects.create(
        config=config,
        state=State.IN_SERVICE,
        vm_name=name,
        in_service_at=timezone.now() - timedelta(minutes=minutes_ago),
        **fields,
    )


def fire_in(alertmanager, service):
    """A firing scale-in alert of `service`, as the provisioned rule labels it; waits until Alertmanager lists it."""
    alertmanager.post_alerts(
        [
            {
                "labels": {
                    "alertname": "AutoscaleLowCpu",
                    "service": service,
                    "autoscale": "true",
                    "metric": "cpu",
                    "direction": "in",
                },
                "annotations": {"summary": f"{service}: CPU below 20%", "value": "4"},
                "startsAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        ]
    )
    deadline = time.monotonic() + 5
    while not [a for a in alertmanager.alerts({"service": service}) if a.labels.get("direction") == "in"]:
        assert time.monotonic() < deadline, "Alertmanager never listed the scale-in alert"
        time.sleep(0.1)


def decisions(service):
    return list(ScalingDecision.objects.filter(service_name=service).order_by("id").values_list("outcome", flat=True))


def scale_ins(service):
    return list(ScaleOutEvent.objects.filter(service_name=service, action=Action.SCALE_IN).order_by("id"))


def removed_by(event):
    return sorted(event.instances_removed.values_list("vm_name", flat=True))


def test_a_scale_in_alert_removes_the_newest_never_a_protected_one_and_never_crosses_min(alertmanager, make_config):
    service = random_service_name("sin")
    config = make_config(service, min_instances=1, max_instances=4, scale_in_threshold=20, scale_in_cooldown_seconds=0)
    instance(config, "old", minutes_ago=60)
    instance(config, "newer", minutes_ago=30)
    instance(config, "newest", minutes_ago=20, protected_from_scale_in=True)
    fire_in(alertmanager, service)

    evaluator.evaluator_pass()
    (first,) = scale_ins(service)
    assert (first.action, first.source, first.vm_count, first.alert_name) == (
        Action.SCALE_IN,
        "alert",
        1,
        "AutoscaleLowCpu",
    )
    assert removed_by(first) == ["newer"]
    assert first.decisions.get().reason == "Scale in by 1 VM(s): 3 instances in service, minimum 1."
    # The pipeline is told which instance goes.
    parameters = event_jenkins_parameters(event=first, token="t")
    assert parameters["ACTION"] == "scale_in"
    assert parameters["INSTANCE_IDS"] == str(ManagedInstance.objects.get(vm_name="newer", config=config).pk)
    assert parameters["DRAIN_TIMEOUT"] == "300"

    # The chosen one is leaving (its scale-in is in progress): not chosen again, not counted; the protected one stays.
    evaluator.evaluator_pass()
    second = scale_ins(service)[1]
    assert removed_by(second) == ["old"]
    assert second.decisions.get().reason == "Scale in by 1 VM(s): 2 instances in service, minimum 1."

    evaluator.evaluator_pass()
    evaluator.evaluator_pass()
    assert len(scale_ins(service)) == 2, list(ScalingDecision.objects.order_by("pk").values_list("reason", flat=True))
    assert decisions(service) == [Outcome.SCALE_IN, Outcome.SCALE_IN, Outcome.AT_MIN]
    assert ManagedInstance.objects.get(config=config, vm_name="newest").removed_by_event is None

    # A failed scale-in gives its instance back: it counts again, and may be chosen again.
    ScaleOutEvent.objects.filter(pk=second.pk).update(status=ScaleOutEvent.Status.FAILED)
    evaluator.evaluator_pass()
    assert decisions(service)[-1] == Outcome.SCALE_IN
    assert removed_by(scale_ins(service)[2]) == ["old"]


def test_the_order_unhealthy_then_an_older_template_then_newest_or_oldest(alertmanager, make_config):
    from templates_app.models import VMTemplate

    service = random_service_name("sin")
    older = VMTemplate.objects.create(name=f"{service}-old-tpl", status=VMTemplate.Status.READY)
    config = make_config(service, min_instances=2, max_instances=6, scale_in_threshold=20, scale_in_step=5,
                         scale_in_cooldown_seconds=0, scale_in_order="oldest")  # fmt: skip
    instance(config, "a-oldest", minutes_ago=50)
    instance(config, "b-sick", minutes_ago=10, health=ManagedInstance.Health.UNHEALTHY)
    instance(config, "c-old-template", minutes_ago=20, template=older)
    instance(config, "d", minutes_ago=40)
    instance(config, "e-adopted", minutes_ago=90, origin=ManagedInstance.Origin.ADOPTED, protected_from_scale_in=True)
    fire_in(alertmanager, service)
    evaluator.evaluator_pass()
    (event,) = scale_ins(service)
    # 5 in service, min 2: at most 3 go, the protected one never: b (unhealthy), c (older template), a (oldest).
    assert event.vm_count == 3 and removed_by(event) == ["a-oldest", "b-sick", "c-old-template"]
    assert event_jenkins_parameters(event=event, token="t")["INSTANCE_IDS"].count(",") == 2


def test_no_scale_in_while_a_scale_out_is_in_flight_or_its_vm_warms_up_or_in_the_scale_in_cooldown(
    alertmanager, make_config, make_event
):
    service = random_service_name("sin")
    config = make_config(service, min_instances=1, max_instances=4, scale_in_threshold=20, cooldown_seconds=120,
                         scale_in_cooldown_seconds=300)  # fmt: skip
    instance(config, "a", minutes_ago=60)
    instance(config, "b", minutes_ago=60)
    scale_out = make_event(config, status=ScaleOutEvent.Status.RUNNING, vm_count=1)
    fire_in(alertmanager, service)

    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.ALREADY_SCALING]
    assert f"event #{scale_out.pk} is still in progress; no scale-in" in ScalingDecision.objects.get().reason

    # The scale-out's VM came into service 10 s ago: it warms up for the scale-out cooldown (120 s).
    ScaleOutEvent.objects.filter(pk=scale_out.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)
    new = instance(config, "c", minutes_ago=0, created_by_event=scale_out)
    ManagedInstance.objects.filter(pk=new.pk).update(in_service_at=timezone.now() - timedelta(seconds=10))
    evaluator.evaluator_pass()
    assert decisions(service)[-1] == Outcome.WARMING_UP
    assert "new VMs warm up for the scale-out cooldown of 120 s" in ScalingDecision.objects.order_by("pk").last().reason

    ManagedInstance.objects.filter(pk=new.pk).update(in_service_at=timezone.now() - timedelta(seconds=121))
    evaluator.evaluator_pass()
    (event,) = scale_ins(service)
    assert removed_by(event) == ["c"]

    # Its own cooldown, from the scale-in's start; the scale-out cooldown is not what holds it back.
    ScaleOutEvent.objects.filter(pk=event.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)
    evaluator.evaluator_pass()
    assert decisions(service)[-1] == Outcome.COOLDOWN
    assert "the scale-in cooldown is 300 s" in ScalingDecision.objects.order_by("pk").last().reason
    ScaleOutEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(seconds=301))
    evaluator.evaluator_pass()
    assert len(scale_ins(service)) == 2, list(ScalingDecision.objects.order_by("pk").values_list("reason", flat=True))


def test_the_webhook_tells_the_direction_by_the_label(client, monitoring, make_config):
    service = random_service_name("sin")
    config = make_config(service, min_instances=1, max_instances=4, scale_in_threshold=20, cooldown_seconds=0)
    for name in ("a", "b", "c"):
        instance(config, name, minutes_ago=60)
    labels = {"metric": "cpu", "direction": "in"}
    body = post_webhook(client, service, firing_payload(service, alertname="AutoscaleLowCpu", labels=labels))
    assert body.decisions[0]["outcome"] == Outcome.SCALE_IN
    (event,) = scale_ins(service)
    assert removed_by(event) == ["c"]
    # The same alert repeated: a duplicate, nothing more removed.
    again = post_webhook(client, service, firing_payload(service, alertname="AutoscaleLowCpu", labels=labels))
    assert again.decisions[0]["outcome"] == Outcome.DUPLICATE
    # A rule without the label (pushed before scale-in existed) and one labelled "out" scale out.
    for n, extra in enumerate([{}, {"direction": "out"}]):
        payload = firing_payload(service, fingerprint=f"f{n}", labels={"metric": "cpu", **extra})
        assert post_webhook(client, service, payload).decisions[0]["outcome"] == Outcome.SCALE_OUT
        ScaleOutEvent.objects.filter(service_name=service).update(status=ScaleOutEvent.Status.SUCCEEDED)
    # A service without a scale-in threshold never scales in, and says why.
    other = random_service_name("sin")
    make_config(other, min_instances=1)
    body = post_webhook(client, other, firing_payload(other, alertname="AutoscaleLowCpu", labels=labels))
    assert body.decisions[0]["outcome"] == Outcome.NOT_A_SIGNAL
    assert "has no scale-in threshold" in body.decisions[0]["reason"]


def spike_until(seconds_from_now):
    """A custom expression read from the real Prometheus: 50 % until the given time, 10 % after it."""
    end = int(time.time() + seconds_from_now)
    return f"10 + 40 * clamp_max(clamp_min(vector({end}) - time(), 0), 1)"


def test_target_tracking_steps_4_vms_at_20_percent_down_to_min_without_overshooting(monitoring, make_config):
    """Target 60 %, the load of 0.8 VM: 4 VMs at 20 %, then 3 at 26.7 %, then 2 at 40 %: the 0.9 x target rule
    removes one VM at a time down to min 2, and no pass asks for a VM back."""
    service = random_service_name("sitt")
    config = make_config(service, policy_type="target_tracking", target_value=60, min_instances=2, max_instances=6,
                         scale_in_duration_seconds=30, scale_in_cooldown_seconds=0,
                         promql_expression="vector(20)")  # fmt: skip
    for n in range(4):
        instance(config, f"vm-{n}", minutes_ago=60 - n)
    sizes = [4]
    for _round in range(4):
        evaluator.evaluator_pass()
        for event in scale_ins(service):
            if event.status != ScaleOutEvent.Status.SUCCEEDED:
                # The pipeline removed the instances: the service runs on fewer VMs, each busier.
                event.instances_removed.update(state=State.REMOVED)
                ScaleOutEvent.objects.filter(pk=event.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)
        n = ManagedInstance.objects.filter(config=config, state=State.IN_SERVICE).count()
        if n != sizes[-1]:
            sizes.append(n)
        config.promql_expression = f"vector({80 / n:.4f})"
        config.save(update_fields=["promql_expression"])
    assert sizes == [4, 3, 2]
    assert not ScaleOutEvent.objects.filter(service_name=service, action=Action.SCALE_OUT).exists()
    first, second = scale_ins(service)
    assert first.reason == (
        "4 VMs at most 20 % over the last 30 s: 3 VMs would be at 26.7 %, at or below 0.9 x 60 % = 54 %: -1"
    )
    assert second.source == "metric" and second.reason.startswith("3 VMs at most 26.7 % over the last 30 s: 2 VMs")
    assert removed_by(first) == ["vm-3"] and removed_by(second) == ["vm-2"]  # the newest first
    assert decisions(service)[-1] == Outcome.ON_TARGET


def test_target_tracking_judges_the_highest_average_of_the_scale_in_duration(monitoring, make_config):
    service = random_service_name("sitt")
    config = make_config(service, policy_type="target_tracking", target_value=60, min_instances=1, max_instances=6,
                         scale_in_duration_seconds=600, scale_in_cooldown_seconds=0,
                         promql_expression=spike_until(-30))  # fmt: skip
    for n in range(3):
        instance(config, f"vm-{n}", minutes_ago=60)
    # 10 % now, but 50 % half a minute ago, within the 600 s window: 2 VMs would be at 75 %.
    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.NOT_IDLE]
    assert ScalingDecision.objects.get().reason.startswith("3 VMs at most 50 % over the last 600 s: 2 VMs would be")
    # With a window that no longer holds the spike, the same 10 % scales in.
    config.scale_in_duration_seconds = 20
    config.save(update_fields=["scale_in_duration_seconds"])
    evaluator.evaluator_pass()
    assert decisions(service) == [Outcome.NOT_IDLE, Outcome.SCALE_IN]
