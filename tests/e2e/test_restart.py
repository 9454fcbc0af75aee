"""The portal's processes killed and started again while an alert fires (issue 13's must-show, issue 16 item 7).

The portal runs here as in production, in processes of its own that the test can kill: gunicorn (the web: the
webhook Alertmanager calls, the callbacks the pipeline makes) and `manage.py qcluster` (the tasks: triggers,
the evaluator, the sweep), both on the test database, both rendering and calling back at the web server's URL.
The session's task cluster is stopped meanwhile, so no other process takes the tasks.

Issue 16's points of the flow are hit with fault points (common/faults.py): started with PORTAL_FAULT_POINT, a
process SIGKILLs its whole group there; the test kills the other one too and starts both again without it. A
scale-in step in flight is a build draining an F5 member while both processes are killed and kept down; the
build's callbacks wait for the portal (PORTAL_DOWN_WAIT). Each test takes 1-2 minutes (most of it waiting for
django-q2's scheduler, which first looks 30 s after a cluster starts).
"""

import re
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from events.models import AlertNotification, EvaluatorState, ScaleOutEvent, ScalingDecision
from lab.core import free_port
from tests.e2e.conftest import PortalProcess, portal_env, task_cluster, wait_for, waiting, web_server

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
Status = ScaleOutEvent.Status
Outcome = ScalingDecision.Outcome
EVALUATOR_TASK = "events.tasks.evaluator_run"
SWEEP_TASK = "events.tasks.event_sweep"
# How late the evaluator's first pass can come after the task cluster starts: its first worker queues an evaluator
# run at once (events/signals.py), which claims the current tick as soon as a worker takes it; the margin is for a
# loaded machine starting the cluster's processes.
EVALUATOR_START_LATENCY = 30
# What waits for the sweep's next run after its run at the start: its schedule is every minute.
SWEEP_LATENCY = 60 + 20


@dataclass
class Portal:
    url: str
    web: PortalProcess
    tasks: PortalProcess

    def kill(self):
        self.web.kill()
        self.tasks.kill()

    def start(self, **env):
        self.web.start(**env)
        self.tasks.start(**env)


def _schedules():
    """The evaluator and the sweep scheduled, due now (an earlier test's flush may have emptied the table); the
    fleet reconcile, the template sync and the provisioning schedule not: this is about the decisions, and a pass
    that reloads Prometheus would drop the firing alert for a few seconds."""
    from django_q.models import Schedule

    Schedule.objects.exclude(func__in=[EVALUATOR_TASK, SWEEP_TASK]).delete()
    for func in (EVALUATOR_TASK, SWEEP_TASK):
        Schedule.objects.update_or_create(
            func=func,
            defaults={
                "name": f"restart {func}",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
                "next_run": timezone.now(),
            },
        )


@pytest.fixture
def portal(e2e, settings):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings.PORTAL_URL = url  # what the seeding pass renders into Alertmanager's webhook receiver
    env = portal_env(e2e.lab, url, EVENT_PENDING_SWEEP_AFTER="3", EVENT_TRIGGER_LEASE="10")
    e2e.cluster.kill()
    _schedules()
    handle = Portal(url, web_server(e2e.lab, env, port), task_cluster(e2e.lab, env, name="qcluster-restart"))
    try:
        handle.start()
        yield handle
    finally:
        handle.kill()
        # The tasks the killed clusters had taken: django-q hands them out again only after Q_CLUSTER["retry"]
        # (360 s); each is safe to run twice, and the test has seen what the others did in their place.
        from django_q.models import OrmQ

        OrmQ.objects.filter(lock__isnull=False).delete()
        e2e.cluster.start()  # for the clean-up and the tests after this one


def _webhook_failures(e2e):
    """Alertmanager's count of failed webhook deliveries (its own metric)."""
    text = requests.get(f"{e2e.alertmanager['url']}/metrics", timeout=10).text
    found = re.findall(
        r'^alertmanager_notifications_failed_total\{[^}]*integration="webhook"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(value) for value in found)


def _builds_of(e2e, event):
    """The Jenkins builds of the event's job that carry its id (what 'triggered exactly once' means)."""
    job = event.jenkins_job or event.config.jenkins_job_name
    builds = [e2e.jenkins.build(job, number) for number in e2e.jenkins.job(job)["builds"]]
    return [b for b in builds if str((b.get("parameters") or {}).get("EVENT_ID")) == str(event.pk)]


def _seeded(e2e, **fields):
    plan = e2e.plan(instances=2, threshold=70, duration_seconds=2, cooldown_seconds=300, max_instances=4, **fields)
    config = e2e.seed(plan).config
    vm_port = e2e.lab.info("metrics")["vm_port"]
    seeded = {f"{address}:{vm_port}" for address in plan.monitored}
    wait_for("the seeded VMs to be scraped", lambda: e2e.scrape_targets(plan) == dict.fromkeys(seeded, "up"))
    return plan, config


def _die_at(portal, point, act, *, timeout=60):
    """Start the portal with the fault point set, do `act`, wait until a process killed itself there; then kill
    what is left of the other one (both are down, as in a crash of the machine).

    A point of the webhook is hit in the web server alone: the task cluster is not started meanwhile, or its
    evaluator (which resumes at once when a cluster starts) could act on the firing alert before the webhook does."""
    portal.kill()
    started = [portal.web] if point.startswith("webhook.") else [portal.web, portal.tasks]
    for process in started:
        process.start(PORTAL_FAULT_POINT=point)
    act()
    wait_for(
        f"a portal process to die at {point}",
        lambda: not all(process.alive() for process in started),
        timeout=timeout,
    )
    portal.kill()


def _queued_tasks(name_prefix):
    from django_q.models import OrmQ

    return [q for q in OrmQ.objects.all() if (q.name() or "").startswith(name_prefix)]


def test_a_started_task_cluster_queues_what_is_due_at_once(e2e, portal):
    """django-q2 first looks at its schedules 30 s after a cluster starts: each worker runs the scheduler once when
    it is spawned (events/signals.py), so after a restart the sweep and the evaluator run within seconds."""
    from django_q.models import OrmQ, Schedule, Task

    portal.kill()
    Schedule.objects.filter(func=SWEEP_TASK).update(next_run=timezone.now())
    started = timezone.now()
    portal.tasks.start()
    wait_for(
        "the sweep to run after the start",
        lambda: Task.objects.filter(func=SWEEP_TASK, started__gte=started).exists(),
        timeout=20,
    )
    elapsed = Task.objects.filter(func=SWEEP_TASK, started__gte=started).earliest("started").started - started
    assert elapsed.total_seconds() < 15, elapsed  # not the guard's first look, 30 s after the start
    assert Task.objects.filter(func=SWEEP_TASK, started__gte=started).count() == 1  # once, however many workers
    print(f"\nthe sweep ran {elapsed.total_seconds():.1f}s after the task cluster started")

    # The evaluator resumes although its schedule is not due for ten minutes: the cluster queues one run at start.
    portal.kill()
    OrmQ.objects.filter(lock__isnull=False).delete()  # what the killed cluster had taken (its evaluator run)
    Schedule.objects.filter(func=EVALUATOR_TASK).update(next_run=timezone.now() + timedelta(minutes=10))
    started = timezone.now()
    portal.tasks.start()
    state = wait_for(
        "an evaluator pass after the start",
        lambda: EvaluatorState.objects.filter(last_pass_at__gt=started).first(),
        timeout=EVALUATOR_START_LATENCY,
    )
    resumed = Task.objects.filter(name="evaluator-resumed-at-start", started__gte=started).count()
    assert resumed + len(_queued_tasks("evaluator-resumed-at-start")) == 1  # one run, however many workers
    print(f"the evaluator passed {(state.last_pass_at - started).total_seconds():.1f}s after the start")


def test_web_and_task_processes_killed_while_the_alert_fires_scale_out_exactly_once_after_the_start(e2e, portal):
    plan, _config = _seeded(e2e)

    # Both processes die (SIGKILL: no clean-up), then the load comes: the alert fires while the portal is down,
    # and Alertmanager's delivery finds nobody.
    portal.kill()
    failures = _webhook_failures(e2e)
    e2e.load(plan, 170)
    wait_for("the alert to fire", lambda: e2e.prometheus_alerts(plan, state="firing"), timeout=30)
    wait_for("Alertmanager's delivery to fail", lambda: _webhook_failures(e2e) > failures, timeout=30)
    assert not e2e.events(plan) and not AlertNotification.objects.filter(service_name=plan.service).exists()

    started = timezone.now()
    portal.start()
    event = e2e.wait_event(plan, finished=False, timeout=EVALUATOR_START_LATENCY + e2e.settings.EVALUATOR_INTERVAL + 20)
    delay = (event.created_at - started).total_seconds()
    path = "webhook (Alertmanager's retry)" if event.notification_id else "evaluator"
    event = e2e.wait_event(plan, timeout=90)
    assert event.status == Status.SUCCEEDED, (event.error, e2e.console(event))

    # Both ways in have had their say since the start: Alertmanager's retried delivery and an evaluator pass.
    wait_for(
        "a notification stored after the start",
        lambda: AlertNotification.objects.filter(service_name=plan.service).exists(),
        timeout=60,
    )
    wait_for(
        "an evaluator pass after the start",
        lambda: EvaluatorState.objects.filter(last_pass_at__gt=started + timedelta(seconds=1)).exists(),
        timeout=EVALUATOR_START_LATENCY + 15,
    )
    time.sleep(1)
    events = e2e.events(plan)
    assert [e.pk for e in events] == [event.pk], e2e.diagnose(plan)
    assert len(_builds_of(e2e, event)) == 1
    assert len(e2e.vms(plan)) == 1 and len(e2e.f5_members(plan)) == 1
    outcomes = list(ScalingDecision.objects.filter(service_name=plan.service).values_list("outcome", flat=True))
    assert outcomes.count(Outcome.SCALE_OUT) == 1, outcomes
    # Within the evaluator's start latency and one interval (the webhook's retry comes sooner: a few seconds).
    assert delay <= EVALUATOR_START_LATENCY + e2e.settings.EVALUATOR_INTERVAL + 10, (delay, path)
    print(f"\nrestart: the scale-out came {delay:.1f}s after the start, through the {path}; decisions {outcomes}")


def test_a_notification_lost_while_the_web_server_is_down_is_acted_on_by_the_evaluator(e2e, portal):
    plan, config = _seeded(e2e)
    # The build waits a while in Jenkins' queue: its callbacks find the web server back.
    e2e.jenkins.set_build_behaviour(job=config.jenkins_job_name, queue_delay=10)
    portal.kill()
    failures = _webhook_failures(e2e)
    e2e.load(plan, 170)
    wait_for("the alert to fire", lambda: e2e.prometheus_alerts(plan, state="firing"), timeout=30)
    wait_for("Alertmanager's delivery to fail", lambda: _webhook_failures(e2e) > failures, timeout=30)

    # Only the task cluster comes back: no notification can arrive, the evaluator acts on the firing alert.
    started = timezone.now()
    portal.tasks.start()
    interval = e2e.settings.EVALUATOR_INTERVAL
    event = e2e.wait_event(plan, finished=False, timeout=EVALUATOR_START_LATENCY + interval + 10)
    delay = (event.created_at - started).total_seconds()
    assert event.source == ScaleOutEvent.Source.ALERT and event.notification_id is None  # the evaluator's
    assert not AlertNotification.objects.filter(service_name=plan.service).exists()
    portal.web.start()
    event = e2e.wait_event(plan, timeout=90)
    assert event.status == Status.SUCCEEDED, (event.error, e2e.console(event))

    # Alertmanager's delivery, once the web server answers, is a duplicate of the evaluator's event.
    notification = wait_for(
        "the late notification",
        lambda: AlertNotification.objects.filter(service_name=plan.service, status="firing").first(),
        timeout=60,
    )
    e2e.wait_decided()
    late = list(notification.decisions.values_list("outcome", flat=True))
    assert late == [Outcome.DUPLICATE], late
    assert [e.pk for e in e2e.events(plan)] == [event.pk] and len(_builds_of(e2e, event)) == 1
    assert delay <= EVALUATOR_START_LATENCY + interval + 10, delay
    print(f"\nlost notification: the evaluator scaled out {delay:.1f}s after the task cluster started")


FLOW_POINTS = ["webhook.notification_stored", "decision.event_created", "trigger.build_requested"]


@pytest.mark.parametrize("point", FLOW_POINTS)
def test_killed_at_a_point_of_the_flow_the_event_is_triggered_exactly_once(e2e, portal, point):
    plan, config = _seeded(e2e)
    if point == "trigger.build_requested":
        # The build waits in Jenkins' queue until the portal is back: its callbacks must find the web server.
        e2e.jenkins.set_build_behaviour(job=config.jenkins_job_name, queue_delay=8)
    _die_at(portal, point, lambda: e2e.load(plan, 170))

    # What the crash left behind.
    events = e2e.events(plan)
    if point == "webhook.notification_stored":
        # Stored (the webhook's one statement committed), not decided: no decider was woken for it.
        assert not events
        assert list(AlertNotification.objects.filter(service_name=plan.service).values_list("decided_at", flat=True))
        assert not AlertNotification.objects.filter(service_name=plan.service, decided_at__isnull=False).exists()
    elif point == "decision.event_created":
        assert [e.status for e in events] == [Status.PENDING] and not _queued_tasks(f"event-trigger-{events[0].pk}")
    else:
        (event,) = events
        # Jenkins has the build request (queued for a few seconds), the event does not know it.
        assert event.status == Status.PENDING and event.trigger_claimed_at is not None
        assert event.trigger_attempts == 1 and event.jenkins_queue_id is None

    started = timezone.now()
    portal.start()
    event = e2e.wait_event(plan, timeout=EVALUATOR_START_LATENCY + 60)
    assert event.status == Status.SUCCEEDED, (event.error, e2e.console(event))
    wait_for(
        "an evaluator pass after the start",
        lambda: EvaluatorState.objects.filter(last_pass_at__gt=started + timedelta(seconds=1)).exists(),
        timeout=EVALUATOR_START_LATENCY + 15,
    )
    assert [e.pk for e in e2e.events(plan)] == [event.pk], e2e.diagnose(plan)
    assert len(_builds_of(e2e, event)) == 1
    assert len(e2e.vms(plan)) == 1 and len(e2e.f5_members(plan)) == 1
    # Every notification decided: the one the crash left waiting by the decider the started cluster queued (a
    # duplicate when the evaluator, which resumes at the start too, acted on the alert first).
    e2e.wait_decided()
    # Every step finished, the trigger's too (the sweep finishes the one a killed trigger left running).
    wait_for(
        "the trigger step to be finished",
        lambda: event.actions.filter(step="trigger", status="succeeded").exists(),
        timeout=SWEEP_LATENCY,
    )
    steps = dict(event.actions.values_list("step", "status"))
    assert set(steps.values()) == {"succeeded"}, steps
    print(f"\n{point}: event #{event.pk} {event.status}, steps {steps}")


def test_killed_in_a_provisioning_pass_between_swap_and_reload_the_next_pass_completes_it(e2e, portal):
    from django_q.models import Schedule

    from autoscaling.models import AutoscalingConfig, ProvisioningRun
    from autoscaling.provisioning import inputs
    from demo import services as demo

    Run = ProvisioningRun.Status
    # The periodic pass is what serves a pass that died (its own task comes back only after Q_CLUSTER["retry"]).
    Schedule.objects.update_or_create(
        func="autoscaling.tasks.provisioning_periodic",
        defaults={
            "name": "restart provisioning",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
    plan = e2e.plan(instances=2, threshold=70)

    def seed():
        # The config's save asks for a pass, which the task cluster runs: it dies with the new rule file swapped
        # in on the monitoring host, before Prometheus reloads.
        demo.demo_seed(lab=e2e.lab, plan=plan, start_vm_agent=False, provision=False)

    _die_at(portal, "provisioning.files_swapped", seed)
    (dead,) = ProvisioningRun.objects.filter(status=Run.RUNNING)
    assert e2e.prometheus_rule(plan) is None  # on the host, not loaded

    started = timezone.now()
    portal.start()
    wait_for(
        "the interrupted pass to be served",
        lambda: (
            ProvisioningRun.objects.filter(status__in=[Run.CHANGED, Run.UNCHANGED], started_at__gt=started).exists()
            and not ProvisioningRun.objects.filter(status__in=[Run.RUNNING, Run.QUEUED]).exists()
        ),
        timeout=SWEEP_LATENCY + 10,  # the periodic pass's schedule: due at the start, then every minute
    )
    dead.refresh_from_db()
    assert dead.status == Run.FAILED and "Interrupted" in dead.error and dead.finished_at, dead.error
    served = ProvisioningRun.objects.filter(started_at__gt=started).exclude(status=Run.MERGED).order_by("pk").first()
    assert "prometheus" in served.reloads and "alertmanager" in served.reloads, served.reloads
    wait_for("Prometheus to have the service's rule", lambda: e2e.prometheus_rule(plan), timeout=10)
    receiver = inputs.service_spec(AutoscalingConfig.objects.get(service_name=plan.service)).receiver_name
    loaded = requests.get(f"{e2e.alertmanager['url']}/api/v2/status", timeout=10).json()["config"]["original"]
    assert receiver in loaded  # Alertmanager runs the new route, not only has it on disk
    print(f"\nprovisioning: pass #{dead.pk} {dead.status} ({dead.error}); pass #{served.pk} {served.reloads}")


def test_killed_while_a_scale_in_drains_the_build_finishes_the_removal_once_after_the_start(e2e, portal):
    from autoscaling.models import IpAllocation
    from events import intake
    from fleet.models import ManagedInstance

    plan, config = _seeded(e2e, scale_in_threshold=None)  # no scale-in alert: only the operator's removal
    # A VM the portal adds (the seeded ones are only monitored): the one the scale-in takes out again.
    added = intake.scale_out_request(service_name=plan.service, user=None, vm_count=1, reason="restart test").event
    assert added is not None
    added = e2e.wait_event(plan, timeout=EVALUATOR_START_LATENCY + 60)
    assert added.status == Status.SUCCEEDED, (added.error, e2e.console(added))
    instance = ManagedInstance.objects.get(created_by_event=added)
    member = f"{instance.ip_address}:8080"
    # 30 connections ending at 3 a second: the drain takes about 10 s, and the portal is down through its end.
    e2e.f5.set_member_connections(plan.f5_pool, member, 30, decay_per_second=3)
    decision = intake.instance_remove_request(instance_id=instance.pk, user=None, reason="restart test")
    event = decision.event
    assert event is not None, decision.reason
    waiting(
        e2e,
        plan,
        "the build to be draining the member",
        lambda: event.actions.filter(step="f5_drain", status="running").exists(),
        timeout=30,
    )
    portal.kill()
    time.sleep(14)  # the drain ends meanwhile: the build's next report finds the portal down
    event.refresh_from_db()
    assert event.status == Status.RUNNING, event.status

    portal.start()
    event = e2e.wait_event(plan, index=1, timeout=120)
    assert (event.action, event.status) == (ScaleOutEvent.Action.SCALE_IN, Status.SUCCEEDED), (
        event.error,
        e2e.console(event),
    )
    assert [e.pk for e in e2e.events(plan)] == [added.pk, event.pk] and len(_builds_of(e2e, event)) == 1
    instance.refresh_from_db()
    assert (instance.state, instance.removed_by_event_id) == (ManagedInstance.State.REMOVED, event.pk)
    assert instance.vm_name not in e2e.vms(plan) and member not in e2e.f5_members(plan)
    (removed,) = [r for r in e2e.f5.removed(plan.f5_pool) if r["member"].endswith(member)]
    assert removed["connections"] == 0, removed  # drained, then removed
    allocation = IpAllocation.objects.get(address=instance.ip_address, pool__name=plan.pool_name)
    assert allocation.state == IpAllocation.State.RELEASED
    steps = dict(event.actions.values_list("step", "status"))
    assert set(steps.values()) == {"succeeded"} and "f5_drain" in steps and "vm_destroy" in steps, steps
    print(f"\nscale-in: event #{event.pk} {event.status} after a restart in its drain, steps {steps}")
