"""/metrics: the portal's own figures, read from the database at scrape time."""

import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from autoscaling.models import AutoscalingConfig, ProvisioningRun, ProvisioningState
from events.models import AlertNotification, EvaluatorState, EventAction, ScaleOutEvent, ScalingDecision
from fleet.models import Orphan
from templates_app.models import VMTemplate

pytestmark = pytest.mark.django_db


def scrape(client, **headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        assert family.name.startswith("vmautoscale_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def config():
    template = VMTemplate.objects.create(name="tpl-metrics")
    return AutoscalingConfig.objects.create(service_name="web", template=template, enabled=True)


def make_event(config, status, *, created_ago=None, trigger_after=None):
    event = ScaleOutEvent.objects.create(config=config, service_name=config.service_name, status=status)
    if created_ago is not None:
        created = timezone.now() - timedelta(seconds=created_ago)
        triggered = created + timedelta(seconds=trigger_after) if trigger_after is not None else None
        ScaleOutEvent.objects.filter(pk=event.pk).update(created_at=created, triggered_at=triggered)
    return event


def test_counts_follow_the_stored_rows(client, config):
    before = scrape(client)
    decisions = "vmautoscale_scaling_decisions_total"
    for dry_run in ("false", "true"):  # every outcome is listed, live and dry-run
        assert (decisions, (("dry_run", dry_run), ("outcome", "cooldown"))) in before

    notification = AlertNotification.objects.create(
        service_name="web", config=config, status="firing", group_key="{}:{}", payload={}
    )
    AlertNotification.objects.create(service_name="web", status="resolved", group_key="{}:{}", payload={})
    for outcome in ("scale_out", "cooldown", "cooldown", "duplicate"):
        ScalingDecision.objects.create(notification=notification, service_name="web", outcome=outcome, reason="x")
    # A dry-run config's would-be scale-out and its cooldown: counted apart.
    for outcome in ("scale_out", "cooldown"):
        ScalingDecision.objects.create(service_name="web", outcome=outcome, reason="x", dry_run=True)
    make_event(config, ScaleOutEvent.Status.RUNNING)
    failed = make_event(config, ScaleOutEvent.Status.FAILED)
    ScaleOutEvent.objects.filter(pk=failed.pk).update(trigger_attempts=3)
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vmautoscale_alert_notifications_total", status="firing") == 1
    assert delta("vmautoscale_alert_notifications_total", status="resolved") == 1
    for outcome, live, would in (("scale_out", 1, 1), ("cooldown", 2, 1), ("duplicate", 1, 0), ("at_max", 0, 0)):
        assert delta(decisions, outcome=outcome, dry_run="false") == live, outcome
        assert delta(decisions, outcome=outcome, dry_run="true") == would, outcome
    assert delta("vmautoscale_scale_out_events", status="running") == 1
    assert delta("vmautoscale_scale_out_events", status="failed") == 1
    assert delta("vmautoscale_scale_out_events_created_total") == 2
    assert delta("vmautoscale_jenkins_trigger_attempts_total") == 3
    assert value(after, "vmautoscale_autoscaling_configs", enabled="true", sync_state="pending") == 1
    assert value(after, "vmautoscale_autoscaling_configs", enabled="false", sync_state="pending") == 0


def test_trigger_latency_is_a_histogram_of_created_to_triggered(client, config):
    make_event(config, ScaleOutEvent.Status.TRIGGERED, created_ago=60, trigger_after=3)
    make_event(config, ScaleOutEvent.Status.TRIGGERED, created_ago=60, trigger_after=40)
    make_event(config, ScaleOutEvent.Status.PENDING)  # not triggered yet: not in the histogram
    samples = scrape(client)

    name = "vmautoscale_trigger_latency_seconds"
    assert value(samples, f"{name}_count") == 2
    assert value(samples, f"{name}_sum") == pytest.approx(43, abs=0.01)
    assert value(samples, f"{name}_bucket", le="2.0") == 0
    assert value(samples, f"{name}_bucket", le="5.0") == 1
    assert value(samples, f"{name}_bucket", le="30.0") == 1
    assert value(samples, f"{name}_bucket", le="60.0") == 2
    assert value(samples, f"{name}_bucket", le="+Inf") == 2


def test_pipeline_step_durations_by_step(client, config):
    event = make_event(config, ScaleOutEvent.Status.SUCCEEDED)
    start = timezone.now() - timedelta(minutes=5)
    steps = [("vm_clone", 40, "succeeded"), ("f5_add", 1.5, "succeeded"), ("vm_guest_ip", None, "running")]
    for step, seconds, status in steps:
        EventAction.objects.create(
            event=event,
            step=step,
            status=status,
            started_at=start,
            finished_at=start + timedelta(seconds=seconds) if seconds is not None else None,
        )
    samples = scrape(client)

    name = "vmautoscale_pipeline_step_duration_seconds"
    assert value(samples, f"{name}_count", step="vm_clone") == 1
    assert value(samples, f"{name}_sum", step="vm_clone") == pytest.approx(40, abs=0.01)
    assert value(samples, f"{name}_bucket", step="vm_clone", le="30.0") == 0
    assert value(samples, f"{name}_bucket", step="vm_clone", le="60.0") == 1
    assert value(samples, f"{name}_bucket", step="f5_add", le="2.0") == 1
    assert value(samples, f"{name}_bucket", step="f5_add", le="1.0") == 0
    # A step still running has no duration yet, but is counted by status.
    assert value(samples, f"{name}_count", step="vm_guest_ip") == 0
    assert value(samples, "vmautoscale_pipeline_steps_total", step="vm_guest_ip", status="running") == 1
    assert value(samples, "vmautoscale_pipeline_steps_total", step="vm_clone", status="succeeded") == 1


def test_provisioning_passes_reloads_and_errors_of_the_last_hour(client):
    start = timezone.now() - timedelta(minutes=1)
    runs = [
        ("changed", ["prometheus", "alertmanager"], 2),
        ("changed", ["prometheus"], 0.4),
        ("unchanged", [], 0.2),
        ("failed", [], 7),
    ]
    for status, reloads, seconds in runs:
        ProvisioningRun.objects.create(
            status=status, reloads=reloads, started_at=start, finished_at=start + timedelta(seconds=seconds)
        )
    ProvisioningRun.objects.create(status="queued")
    # Older than the window: not counted (the history is trimmed, so the figures are per hour, not totals).
    old = ProvisioningRun.objects.create(status="failed", reloads=["alertmanager"], started_at=start, finished_at=start)
    ProvisioningRun.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(hours=2))
    samples = scrape(client)
    assert value(samples, "vmautoscale_provisioning_last_pass_timestamp_seconds") == 0  # no pass recorded yet

    assert value(samples, "vmautoscale_provisioning_passes_last_hour", status="changed") == 2
    assert value(samples, "vmautoscale_provisioning_passes_last_hour", status="unchanged") == 1
    assert value(samples, "vmautoscale_provisioning_passes_last_hour", status="queued") == 1
    assert value(samples, "vmautoscale_provisioning_passes_last_hour", status="failed") == 1
    assert value(samples, "vmautoscale_provisioning_reloads_last_hour", system="prometheus") == 2
    assert value(samples, "vmautoscale_provisioning_reloads_last_hour", system="alertmanager") == 1
    assert value(samples, "vmautoscale_provisioning_errors_last_hour") == 1
    assert value(samples, "vmautoscale_provisioning_pass_duration_avg_seconds") == pytest.approx(9.6 / 4, abs=0.01)
    assert value(samples, "vmautoscale_provisioning_pass_duration_max_seconds") == pytest.approx(7, abs=0.01)

    last = timezone.now() - timedelta(seconds=30)
    ProvisioningState.objects.update_or_create(pk=1, defaults={"last_pass_at": last, "last_status": "failed"})
    samples = scrape(client)
    assert value(samples, "vmautoscale_provisioning_last_pass_timestamp_seconds") == pytest.approx(last.timestamp())
    assert value(samples, "vmautoscale_provisioning_last_pass_failed") == 1


def test_a_scrape_costs_the_same_queries_whatever_the_row_count(client, config):
    with CaptureQueriesContext(connection) as empty:
        scrape(client)
    event = make_event(config, ScaleOutEvent.Status.SUCCEEDED, created_ago=30, trigger_after=1)
    now = timezone.now()
    EventAction.objects.bulk_create(
        EventAction(event=event, step=step, status="succeeded", started_at=now, finished_at=now)
        for step in EventAction.Step.values
    )
    for i in range(20):
        make_event(config, ScaleOutEvent.Status.SUCCEEDED, created_ago=i + 5, trigger_after=i)
    with CaptureQueriesContext(connection) as full:
        scrape(client)
    assert len(full.captured_queries) == len(empty.captured_queries) <= 15  # one more since the decider backlog


def test_failures_per_service_start_at_zero_and_survive_the_fold(client, config):
    """Every config's service is listed at 0 (a first failure is then an increase for Prometheus), failed and
    rolled-back events count by service and action, and folding them into the checkpoint changes nothing."""
    from events import history

    other = AutoscalingConfig.objects.create(service_name="api", template=config.template, enabled=False)
    samples = scrape(client)
    name = "vmautoscale_scaling_failures_total"
    for service in ("web", "api"):
        for action in ("scale_out", "scale_in"):
            assert (name, (("action", action), ("service", service))) in samples
            assert value(samples, name, service=service, action=action) == 0

    make_event(config, ScaleOutEvent.Status.FAILED)
    make_event(config, ScaleOutEvent.Status.ROLLED_BACK)
    make_event(config, ScaleOutEvent.Status.SUCCEEDED)
    make_event(config, ScaleOutEvent.Status.CANCELLED)
    scale_in = make_event(other, ScaleOutEvent.Status.FAILED)
    ScaleOutEvent.objects.filter(pk=scale_in.pk).update(action="scale_in")
    old = timezone.now() - timedelta(hours=1)
    ScaleOutEvent.objects.update(finished_at=old)
    newest = timezone.now() - timedelta(minutes=20)
    ScaleOutEvent.objects.filter(config=config, status=ScaleOutEvent.Status.ROLLED_BACK).update(finished_at=newest)
    samples = scrape(client)
    assert value(samples, name, service="web", action="scale_out") == 2
    assert value(samples, name, service="web", action="scale_in") == 0
    assert value(samples, name, service="api", action="scale_in") == 1
    last = "vmautoscale_scaling_last_failure_timestamp_seconds"
    assert value(samples, last, service="web", action="scale_out") == pytest.approx(newest.timestamp())
    assert value(samples, last, service="api", action="scale_in") == pytest.approx(old.timestamp())
    assert (last, (("action", "scale_in"), ("service", "web"))) not in samples  # never failed: absent

    # Folded into the checkpoint (and the events pruned), the figures stay.
    assert history.history_fold() is not None
    ScaleOutEvent.objects.all().delete()
    names = (name, last)
    assert {k: v for k, v in scrape(client).items() if k[0] in names} == {
        k: v for k, v in samples.items() if k[0] in names
    }


def test_breakers_orphans_and_the_evaluator(client, config, settings):
    samples = scrape(client)
    assert ("vmautoscale_breaker_open", (("service", "web"),)) in samples
    assert value(samples, "vmautoscale_breaker_open", service="web") == 0
    assert value(samples, "vmautoscale_orphans", kind="vm") == 0
    assert ("vmautoscale_evaluator_last_pass_timestamp_seconds", ()) not in samples  # no pass yet

    now = timezone.now()
    for kind, key, state in [("vm", "vm-1", "found"), ("vm", "vm-2", "powered_off"), ("vm", "vm-3", "removed"),
                             ("member", "/Common/p/127.0.0.9:80", "found"), ("allocation", "7", "gone")]:  # fmt: skip
        Orphan.objects.create(kind=kind, key=key, name=key, state=state, first_seen_at=now, last_seen_at=now)
    settings.EVALUATOR_INTERVAL = 15
    EvaluatorState.objects.update_or_create(pk=1, defaults={"last_pass_at": now, "last_error": ""})
    samples = scrape(client)
    assert value(samples, "vmautoscale_orphans", kind="vm") == 2  # found and powered off; removed is closed
    assert value(samples, "vmautoscale_orphans", kind="member") == 1
    assert value(samples, "vmautoscale_orphans", kind="allocation") == 0
    assert value(samples, "vmautoscale_evaluator_interval_seconds") == 15
    assert value(samples, "vmautoscale_evaluator_last_pass_timestamp_seconds") == pytest.approx(now.timestamp())
    assert value(samples, "vmautoscale_evaluator_last_pass_failed") == 0
    EvaluatorState.objects.filter(pk=1).update(last_error="Alertmanager: connection refused")
    assert value(scrape(client), "vmautoscale_evaluator_last_pass_failed") == 1

    # The breaker opens at SCALE_OUT_BREAKER_FAILURES consecutive failed scale-outs (and never with 0).
    from autoscaling.models import CircuitBreaker

    settings.SCALE_OUT_BREAKER_FAILURES = 3
    breaker = CircuitBreaker.objects.create(config=config, failures=2, last_failure_at=now)
    assert value(scrape(client), "vmautoscale_breaker_open", service="web") == 0
    CircuitBreaker.objects.filter(pk=breaker.pk).update(failures=3)
    assert value(scrape(client), "vmautoscale_breaker_open", service="web") == 1
    settings.SCALE_OUT_BREAKER_FAILURES = 0
    assert value(scrape(client), "vmautoscale_breaker_open", service="web") == 0


def _old_history(config, *, days):
    """An event finished `days` ago with two steps, its notification and decision; returns the event."""
    then = timezone.now() - timedelta(days=days)
    notification = AlertNotification.objects.create(
        service_name=config.service_name, config=config, status="firing", group_key="g", payload={}
    )
    event = make_event(config, ScaleOutEvent.Status.SUCCEEDED)
    ScaleOutEvent.objects.filter(pk=event.pk).update(
        created_at=then,
        triggered_at=then + timedelta(seconds=2),
        finished_at=then + timedelta(minutes=3),
        notification=notification,
        trigger_attempts=1,
    )
    for step in ("ip_allocate", "vm_clone"):
        EventAction.objects.create(
            event=event, step=step, status="succeeded", started_at=then, finished_at=then + timedelta(seconds=40)
        )
    decision = ScalingDecision.objects.create(
        service_name=config.service_name,
        config=config,
        outcome="scale_out",
        reason="r",
        notification=notification,
        event=event,
    )
    AlertNotification.objects.filter(pk=notification.pk).update(received_at=then)
    ScalingDecision.objects.filter(pk=decision.pk).update(decided_at=then)
    return event


def _history_samples(samples):
    return {
        key: v
        for key, v in samples.items()
        if key[0].startswith(
            (
                "vmautoscale_alert_notifications",
                "vmautoscale_scaling_decisions",
                "vmautoscale_scale_out_events",
                "vmautoscale_jenkins_trigger_attempts",
                "vmautoscale_trigger_latency_seconds",
                "vmautoscale_pipeline_step",
            )
        )
    }


def test_the_folded_history_counts_the_same_and_pruning_never_lowers_a_counter(client, config, settings):
    from events import history

    for days in (400, 200, 100):
        _old_history(config, days=days)
    running = make_event(config, ScaleOutEvent.Status.RUNNING)
    ScaleOutEvent.objects.filter(pk=running.pk).update(created_at=timezone.now() - timedelta(days=500))
    _old_history(config, days=0)  # finished now: not settled yet, stays in the tail
    before = _history_samples(scrape(client))
    assert value(before, "vmautoscale_scale_out_events", status="succeeded") == 4
    assert value(before, "vmautoscale_pipeline_step_duration_seconds_count", step="vm_clone") == 4

    through = history.history_fold()
    assert through is not None
    assert _history_samples(scrape(client)) == before
    assert history.history_fold(now=timezone.now() - timedelta(minutes=1)) is None  # never backwards

    settings.HISTORY_RETENTION_DAYS = 90
    settings.EVENT_RETENTION_DAYS = 300
    done = history.history_prune()
    assert done == {"decisions": 3, "notifications": 3, "steps": 6, "events": 1}
    assert ScaleOutEvent.objects.count() == 4 and ScaleOutEvent.objects.filter(pk=running.pk).exists()
    assert EventAction.objects.count() == 2 and AlertNotification.objects.count() == 1
    assert _history_samples(scrape(client)) == before  # the counters never go down

    # New rows still count on top.
    make_event(config, ScaleOutEvent.Status.FAILED)
    after = scrape(client)
    assert value(after, "vmautoscale_scale_out_events", status="failed") == 1
    created = "vmautoscale_scale_out_events_created_total"
    assert value(after, created) == value(before, created) + 1 == 6


def test_prune_history_dry_run_counts_and_deletes_nothing(config, settings, capsys):
    from django.core.management import call_command

    _old_history(config, days=200)
    settings.HISTORY_RETENTION_DAYS = 90
    settings.EVENT_RETENTION_DAYS = 0
    call_command("prune_history", "--dry-run")
    out = capsys.readouterr().out
    assert "notifications: 1 would be deleted" in out and "pipeline steps: 2 would be deleted" in out
    assert "events" not in out.split("Retention")[0].replace("pipeline", "")
    assert AlertNotification.objects.count() == 1 and EventAction.objects.count() == 2
    call_command("prune_history")
    assert AlertNotification.objects.count() == 0 and EventAction.objects.count() == 0
    assert ScaleOutEvent.objects.count() == 1  # events kept (EVENT_RETENTION_DAYS=0)


def test_the_history_is_folded_every_five_minutes(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="events.tasks.history_maintain")
    assert schedule.minutes == 5 and schedule.repeats == -1


def test_metrics_token_requires_a_bearer_token(client, settings):
    settings.METRICS_TOKEN = "metrics-secret-token"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert b"metrics-secret-token" not in wrong.content
    assert scrape(client, HTTP_AUTHORIZATION="Bearer metrics-secret-token")

    settings.METRICS_TOKEN = ""
    assert scrape(client)


def test_exposition_passes_promtool_check_metrics(client, config):
    """Prometheus' own linter accepts the exposition (names, types, histogram series)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install-system-deps.sh"
    event = make_event(config, ScaleOutEvent.Status.SUCCEEDED, created_ago=30, trigger_after=2)
    now = timezone.now()
    EventAction.objects.create(event=event, step="vm_clone", status="succeeded", started_at=now, finished_at=now)
    ProvisioningRun.objects.create(status="changed", reloads=["prometheus"], started_at=now, finished_at=now)
    body = client.get("/metrics").content
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# --- docs/grafana-dashboard.json --------------------------------------------------------------------------------
DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*"}
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exposed_series(client):
    """Series name -> label names, from a scrape (label names from the TYPE line's samples or the HELP text)."""
    series = {}
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        for suffix in SERIES_SUFFIXES[family.type]:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def dashboard_targets():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_grafana_dashboard_is_a_valid_model(client, config):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vmautoscale-portal"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "job"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table"}, panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]

    # Every series a query names is one /metrics exposes, with labels it has; every metric is on the dashboard.
    make_event(config, ScaleOutEvent.Status.SUCCEEDED, created_ago=30, trigger_after=2)
    event = ScaleOutEvent.objects.first()
    now = timezone.now()
    EventAction.objects.create(event=event, step="vm_clone", status="failed", started_at=now, finished_at=now)
    ProvisioningRun.objects.create(status="changed", reloads=["prometheus"], started_at=now, finished_at=now)
    series = exposed_series(client)
    used = set()
    for panel, target in dashboard_targets():
        names = re.findall(r"\bvmautoscale_[a-z0-9_]+", target["expr"])
        assert names, f"{panel['title']}: {target['expr']}"
        for name in names:
            assert name in series, f"{panel['title']}: /metrics has no {name}"
            used.add(name)
        for name, matchers in re.findall(r"\b(vmautoscale_[a-z0-9_]+)\{([^}]*)\}", target["expr"]):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in series[name] | {"job", "instance"}, f"{panel['title']}: {name} has no label {label}"
    families = {re.sub(r"(_total|_bucket|_sum|_count)$", "", name) for name in series}
    shown = {re.sub(r"(_total|_bucket|_sum|_count)$", "", name) for name in used}
    assert families - shown == set(), "metrics missing from the dashboard"


def test_grafana_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every query (as a recording rule), with Grafana's variables filled in."""
    rules = []
    for i, (_panel, target) in enumerate(dashboard_targets()):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {target['expr']}"
        rules.append({"record": f"vmautoscale:dashboard_query:{i}", "expr": expr})
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "rules", str(rule_file)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()
