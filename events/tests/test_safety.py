"""The safety nets through the portal's doors: the circuit breaker counted as scale-outs finish and holding the
webhook, the manual request and the evaluator; failed VMs counted toward max; each process suspended and resumed
through the API and the admin, recorded as such, audited."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from access import roles
from access.models import AuditEntry
from access.tests.helpers import role_user
from autoscaling import policy
from autoscaling.models import CircuitBreaker, ProcessSuspension
from events import evaluator, intake
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.status import event_status_set
from events.tests.conftest import firing_payload, post_webhook
from fleet.models import ManagedInstance

pytestmark = pytest.mark.django_db
Outcome = ScalingDecision.Outcome
Status = ScaleOutEvent.Status
_alerts = iter(range(1, 10_000))


def alert(client, service="web"):
    """A new firing alert of the service through the webhook (a fingerprint of its own); its decision."""
    n = next(_alerts)
    response = post_webhook(client, service, firing_payload(service, fingerprint=f"{n:016x}"))
    assert response.status_code == 202, response.content
    return ScalingDecision.objects.filter(service_name=service).order_by("-pk").first()


@pytest.fixture
def config(make_config, webhook_settings):
    # 1 adopted VM in service (its monitored instance), room for 9 more, no cooldown: only the breaker holds.
    return make_config("web", min_instances=1, max_instances=10, scale_out_step=2, cooldown_seconds=0)


def finish(decision, status):
    assert decision.event_id is not None, (decision.outcome, decision.reason_text)
    assert event_status_set(event_id=decision.event_id, new=status)


def open_breaker(client, config):
    for _ in range(3):
        finish(alert(client), Status.ROLLED_BACK)
    breaker = CircuitBreaker.objects.get(config=config)
    assert breaker.failures == 3 and breaker.opened_at is not None
    return breaker


def api(role):
    client = APIClient()
    client.force_login(role_user(role))
    return client


# --- the circuit breaker ---------------------------------------------------------------------------------------
def test_the_breaker_opens_after_3_failed_scale_outs_and_then_nothing_is_triggered(client, config):
    first = alert(client)
    finish(first, Status.FAILED)
    second = alert(client)
    finish(second, Status.ROLLED_BACK)
    assert CircuitBreaker.objects.get(config=config).failures == 2
    third = alert(client)
    assert third.outcome == Outcome.SCALE_OUT  # two failures do not open it
    finish(third, Status.FAILED)
    events = ScaleOutEvent.objects.count()

    # Open: the webhook, an operator's scale-out and the evaluator trigger nothing, and say why.
    held = [
        alert(client),
        intake.scale_out_request(service_name="web", user=None, vm_count=1),
        evaluator.service_decide(config_id=config.pk, signal=policy.Signal.alert()),
    ]
    # The evaluator finds the outcome it would record already recorded last: it records nothing.
    assert [getattr(d, "outcome", None) for d in held] == [Outcome.BREAKER_OPEN, Outcome.BREAKER_OPEN, None]
    assert ScaleOutEvent.objects.count() == events
    assert "the last 3 scale-outs of “web” failed" in held[0].reason_text
    assert held[0].reason_params["backoff"] == 5

    # Shown in the API.
    body = api(roles.VIEWER).get(f"/api/autoscaling/configs/{config.pk}").json()
    assert body["breaker"]["state"] == "open" and body["breaker"]["failures"] == 3
    assert body["breaker"]["last_failed_event"] == third.event_id and body["breaker"]["retry_at"]


def test_a_success_before_the_third_failure_starts_the_count_again(client, config):
    finish(alert(client), Status.FAILED)
    finish(alert(client), Status.FAILED)
    finish(alert(client), Status.SUCCEEDED)
    finish(alert(client), Status.FAILED)
    assert CircuitBreaker.objects.get(config=config).failures == 1
    assert alert(client).outcome == Outcome.SCALE_OUT


def test_scale_ins_and_cancelled_scale_outs_do_not_count(client, config, make_event):
    for fields in ({"action": ScaleOutEvent.Action.SCALE_IN}, {}):
        event = make_event(config, **fields)
        event_status_set(event_id=event.pk, new=Status.CANCELLED if not fields else Status.FAILED)
    assert not CircuitBreaker.objects.filter(config=config, failures__gt=0).exists()


def test_an_operator_resumes_the_breaker_at_once_through_the_api(client, config):
    open_breaker(client, config)
    assert api(roles.VIEWER).post(f"/api/autoscaling/configs/{config.pk}/resume-breaker").status_code == 403
    assert CircuitBreaker.objects.get(config=config).failures == 3

    response = api(roles.OPERATOR).post(f"/api/autoscaling/configs/{config.pk}/resume-breaker")
    assert response.status_code == 200, response.content
    assert response.json()["breaker"]["state"] == "closed" and response.json()["breaker"]["resumed_by"]
    decision = alert(client)
    assert decision.outcome == Outcome.SCALE_OUT and decision.event.vm_count == 2
    entry = AuditEntry.objects.get(operation="breaker_resume")
    assert entry.actor.username == "operator-user" and entry.additional_data["was_open"] is True


def test_a_trial_after_the_back_off_closes_the_breaker_on_success_and_reopens_it_longer_on_failure(client, config):
    breaker = open_breaker(client, config)
    assert alert(client).outcome == Outcome.BREAKER_OPEN

    def back_off_passes(minutes):
        CircuitBreaker.objects.filter(pk=breaker.pk).update(
            last_failure_at=timezone.now() - timedelta(minutes=minutes, seconds=1)
        )

    back_off_passes(5)
    trial = alert(client)
    assert trial.outcome == Outcome.SCALE_OUT and trial.event.vm_count == 1, trial.reason_text  # a single VM
    assert "trial" in trial.reason_text
    assert alert(client).outcome == Outcome.ALREADY_SCALING  # one trial at a time
    finish(trial, Status.ROLLED_BACK)

    # Failed: open again, now for 10 minutes.
    reopened = alert(client)
    assert reopened.outcome == Outcome.BREAKER_OPEN and reopened.reason_params["backoff"] == 10
    back_off_passes(5)
    assert alert(client).outcome == Outcome.BREAKER_OPEN
    back_off_passes(10)
    second_trial = alert(client)
    assert second_trial.event.vm_count == 1
    finish(second_trial, Status.SUCCEEDED)

    # Closed: scale-outs of the full step again.
    assert CircuitBreaker.objects.get(pk=breaker.pk).failures == 0
    after = alert(client)
    assert after.outcome == Outcome.SCALE_OUT and after.event.vm_count == 2


# --- max counts every VM that may exist ----------------------------------------------------------------------
def test_failed_draining_and_removing_instances_count_toward_max(client, config):
    config.max_instances = 4
    config.save(update_fields=["max_instances"])
    for state in ("failed", "draining", "removing"):
        ManagedInstance.objects.create(config=config, state=state, vm_name=f"web-{state}")
    decision = alert(client)
    assert decision.outcome == Outcome.AT_MAX, decision.reason_text
    assert decision.reason_params == {"current": 1, "creating": 0, "held": 3, "max": 4}
    ManagedInstance.objects.filter(config=config, state="failed").update(state="removed")
    decision = alert(client)
    assert decision.outcome == Outcome.SCALE_OUT and decision.event.vm_count == 1  # room for one, not two


# --- suspended processes -----------------------------------------------------------------------------------------
def _scale_out(client, config):
    return alert(client)


def _intake(client, config):
    return alert(client)


def _scale_in(client, config):
    ManagedInstance.objects.create(config=config, state="in_service", vm_name="web-extra")
    config.scale_in_threshold = 20
    config.save(update_fields=["scale_in_threshold"])
    return evaluator.service_decide(config_id=config.pk, signal=policy.Signal.idle())


def _replace(client, config):
    config.min_instances = 3
    config.save(update_fields=["min_instances"])
    return evaluator.service_decide(config_id=config.pk, signal=policy.Signal.none())


SIGNALS = {"scale_out": _scale_out, "intake": _intake, "scale_in": _scale_in, "replace": _replace}
ACTS = {"scale_out": Outcome.SCALE_OUT, "intake": Outcome.SCALE_OUT, "scale_in": Outcome.SCALE_IN,
        "replace": Outcome.REPLACE}  # fmt: skip


@pytest.mark.parametrize("process", list(SIGNALS))
def test_each_process_is_suspended_and_resumed_through_the_api(client, config, process):
    operator = api(roles.OPERATOR)
    url = f"/api/autoscaling/configs/{config.pk}"
    assert api(roles.VIEWER).post(f"{url}/suspend", {"processes": [process]}, format="json").status_code == 403
    response = operator.post(f"{url}/suspend", {"processes": [process], "reason": "patching"}, format="json")
    assert response.status_code == 200, response.content
    [shown] = response.json()["suspensions"]
    assert shown["process"] == process and shown["reason"] == "patching" and shown["suspended_by"] == "operator-user"
    assert shown["suspended_at"]

    notifications = AlertNotification.objects.count()
    events = ScaleOutEvent.objects.count()
    held = SIGNALS[process](client, config)
    assert held.outcome == Outcome.SUSPENDED, held.reason_text
    assert held.reason_params["reason"] == "patching" and held.reason_params["by"] == "operator-user"
    assert "suspended" in held.reason_text and ScaleOutEvent.objects.count() == events
    if process in ("scale_out", "intake"):
        assert AlertNotification.objects.count() == notifications + 1  # stored, not acted on

    response = operator.post(f"{url}/resume", {"processes": [process]}, format="json")
    assert response.status_code == 200 and response.json()["suspensions"] == []
    ScalingDecision.objects.all().delete()  # the evaluator records only what changed: start afresh
    acted = SIGNALS[process](client, config)
    assert acted.outcome == ACTS[process], acted.reason_text
    assert list(AuditEntry.objects.filter(operation__in=["suspend", "resume"]).values_list("operation", flat=True))
    assert sorted(
        AuditEntry.objects.values_list("operation", flat=True).filter(operation__in=["suspend", "resume"])
    ) == [
        "resume",
        "suspend",
    ]


def test_suspend_without_processes_suspends_all_four_and_resume_resumes_them(client, config):
    operator = api(roles.OPERATOR)
    url = f"/api/autoscaling/configs/{config.pk}"
    assert operator.post(f"{url}/suspend", {"processes": ["nap"]}, format="json").status_code == 400
    assert operator.post(f"{url}/suspend", {}, format="json").status_code == 200
    assert sorted(ProcessSuspension.objects.values_list("process", flat=True)) == sorted(
        ["scale_out", "scale_in", "replace", "intake"]
    )
    listed = operator.get("/api/autoscaling/configs").json()["results"][0]
    assert len(listed["suspensions"]) == 4
    assert operator.post(f"{url}/resume", {}, format="json").json()["suspensions"] == []


def test_the_evaluator_records_a_suspended_process_once_and_triggers_nothing(client, config):
    ProcessSuspension.objects.create(config=config, process="replace", reason="r", suspended_at=timezone.now())
    config.min_instances = 3
    config.save(update_fields=["min_instances"])
    first = evaluator.service_decide(config_id=config.pk, signal=policy.Signal.none())
    assert first.outcome == Outcome.SUSPENDED
    assert evaluator.service_decide(config_id=config.pk, signal=policy.Signal.none()) is None
    assert not ScaleOutEvent.objects.exists()


# --- the admin -------------------------------------------------------------------------------------------------
def test_suspend_resume_and_the_breaker_through_the_admin(client, config):
    open_breaker(client, config)
    operator = role_user(roles.OPERATOR)
    client.force_login(operator)
    changelist = "/admin/autoscaling/autoscalingconfig/"
    selected = {"_selected_action": [config.pk]}

    form = client.post(changelist, {"action": "suspend_processes", **selected})
    assert form.status_code == 200 and b'name="processes"' in form.content
    assert not ProcessSuspension.objects.exists()  # the form first
    done = client.post(
        changelist,
        {
            "action": "suspend_processes",
            **selected,
            "confirmed": "yes",
            "processes": ["scale_out", "intake"],
            "reason": "vCenter upgrade",
        },  # fmt: skip
        follow=True,
    )
    assert done.status_code == 200
    assert sorted(ProcessSuspension.objects.values_list("process", "reason", "suspended_by__username")) == [
        ("intake", "vCenter upgrade", "operator-user"),
        ("scale_out", "vCenter upgrade", "operator-user"),
    ]

    page = client.get(changelist).content.decode()
    assert "Circuit breaker open" in page and "Scale-out suspended" in page and "Alert intake suspended" in page
    change = client.get(f"{changelist}{config.pk}/change/").content.decode()
    assert "suspended by operator-user" in change and "vCenter upgrade" in change
    assert 'data-state="open"' in change and "the last 3 scale-outs failed" in change

    client.post(
        changelist, {"action": "resume_processes", **selected, "confirmed": "yes", "processes": ["intake"]}, follow=True
    )
    assert list(ProcessSuspension.objects.values_list("process", flat=True)) == ["scale_out"]
    client.post(changelist, {"action": "resume_breaker", **selected}, follow=True)
    assert CircuitBreaker.objects.get(config=config).failures == 0
    change = client.get(f"{changelist}{config.pk}/change/").content.decode()
    assert 'data-state="closed"' in change and "Last resumed by operator-user" in change
    client.logout()
    assert alert(client).outcome == Outcome.SUSPENDED  # scale-out is still suspended
