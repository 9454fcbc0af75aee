"""The desired state of the monitoring host and Jenkins, rendered from plain snapshots of the configs.

Nothing here touches the database or the network: `provisioning/` builds the snapshots (`ServiceSpec`) and
compares what these functions return with what is on the host. Every function is deterministic, so a second
render of the same database gives the same bytes and a pass with no change writes nothing.
"""

import dataclasses
import functools
import hashlib
import json
import posixpath
import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import yaml
from django.utils.translation import gettext as _

from autoscaling import redaction
from pipeline import contract

MANAGED_BY = "vmautoscale"
# Receivers, rule groups, the scrape job and Jenkins jobs the portal owns carry this prefix; everything else in the
# files it edits belongs to someone else and is kept.
PREFIX = "vmautoscale-"
SCRAPE_JOB_NAME = "vmautoscale"
# The portal's own scrape job (its /metrics) and rule group (its alerts about itself, in a file of their own).
PORTAL_JOB_NAME = "vmautoscale-portal"
PORTAL_GROUP_NAME = "vmautoscale-portal"
PORTAL_RULES_FILE_NAME = "vmautoscale-portal.rules.yml"
SECRET_MASK = redaction.SECRET_MASK
RULES_HEADER = (
    "# Managed by the VM Autoscale portal: generated from its autoscaling configs. Edits here are overwritten.\n"
)
PORTAL_RULES_HEADER = (
    "# Managed by the VM Autoscale portal: its alerts about itself, on its own /metrics (labels from\n"
    "# PORTAL_ALERT_LABELS). Edits here are overwritten.\n"
)
ALERTMANAGER_HEADER = (
    "# Receivers named vmautoscale-* and the routes to them are managed by the VM Autoscale portal;\n"
    "# everything else in this file is left as it is.\n"
)
JOB_TEMPLATE = Path(__file__).resolve().parent.parent / "jenkins" / "job-template.xml"
JENKINSFILE = Path(__file__).resolve().parent.parent / "jenkins" / "Jenkinsfile.autoscale"

ALERT_NAMES = {"cpu": "AutoscaleHighCpu", "memory": "AutoscaleHighMemory"}
SCALE_IN_ALERT_NAMES = {"cpu": "AutoscaleLowCpu", "memory": "AutoscaleLowMemory"}
# The label that tells the webhook and the evaluator which way an alert scales; an alert without it scales out
# (rules pushed before scale-in existed).
DIRECTION_LABEL = "direction"
SCALE_OUT = "out"
SCALE_IN = "in"


class RenderError(Exception):
    """A file on the host cannot be merged with the desired state (e.g. alertmanager.yml has no route)."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the renderer needs of one config (and its template and pool), detached from the database."""

    service_name: str
    enabled: bool
    metric: str
    threshold: float
    duration_seconds: int
    promql_expression: str = ""
    description: str = ""
    scale_out_step: int = 1
    policy_type: str = "step"
    scale_in_threshold: float | None = None
    scale_in_duration_seconds: int = 600
    drain_timeout_seconds: int = 300
    template_name: str = ""
    datacenter: str = ""
    cluster: str = ""
    resource_pool: str = ""
    folder: str = ""
    datastore: str = ""
    network: str = ""
    vm_name_pattern: str = "{service}-{n:03d}"
    ip_pool_id: int | None = None
    f5_pool: str = ""
    f5_partition: str = "Common"
    f5_member_port: int = 80
    targets: tuple = ()

    @property
    def job_name(self):
        return contract.job_name(self.service_name)

    @property
    def group_name(self):
        return f"{PREFIX}{self.service_name}"

    @property
    def receiver_name(self):
        return f"{PREFIX}{self.service_name}"


@dataclass(frozen=True)
class RenderContext:
    """Settings the renderer needs: where things live and how the portal is reached."""

    portal_url: str
    webhook_token: str
    prometheus_config_file: str
    rules_file: str
    targets_dir: str
    rate_window: str = "1m"
    jenkinsfile: str = field(default="", repr=False)
    # The portal watching itself: its rule file, whether it holds the rules and prometheus.yml the scrape job, where
    # Prometheus scrapes /metrics and with which token, and the labels of its alerts ((alert or "", label, value)).
    portal_rules_file: str = ""
    portal_alert_rules: bool = True
    portal_scrape_job: bool = True
    metrics_url: str = ""
    scrape_interval: str = ""
    metrics_token: str = field(default="", repr=False)
    alert_labels: tuple = ()

    def webhook_url(self, service_name):
        return f"{self.portal_url.rstrip('/')}/api/webhook/autoscale/{service_name}"

    @property
    def portal_metrics_url(self):
        return self.metrics_url or f"{self.portal_url.rstrip('/')}/metrics"


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# LibYAML when PyYAML was built with it: the pure-Python parser needs seconds for 500 services.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _yaml(data):
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def _load(text):
    return yaml.load(text, Loader=_Loader)


def _number(value):
    return f"{float(value):g}"


# --- Prometheus rules -------------------------------------------------------------------------------------------
def default_expression(spec, ctx):
    """The metric's percentage for the service, over node_exporter series labelled with the service."""
    selector = f'service="{spec.service_name}"'
    if spec.metric == "memory":
        return (
            f"100 * (1 - sum by (service) (node_memory_MemAvailable_bytes{{{selector}}})"
            f" / sum by (service) (node_memory_MemTotal_bytes{{{selector}}}))"
        )
    return f'100 - (avg by (service) (rate(node_cpu_seconds_total{{mode="idle",{selector}}}[{ctx.rate_window}])) * 100)'


def average_expression(spec, ctx):
    """The service's current average of its metric as one series labelled service="<name>" (target tracking):
    the default expression, or the custom one averaged and labelled."""
    if spec.promql_expression.strip():
        return f'label_replace(avg(({spec.promql_expression.strip()})), "service", "{spec.service_name}", "", "")'
    return default_expression(spec, ctx)


def averages_query(specs, ctx):
    """One query for the averages of many services: their expressions joined with `or` (each series keeps its
    own service label, so none hides another)."""
    return " or ".join(f"({average_expression(spec, ctx)})" for spec in specs)


def _expression(spec, ctx):
    return f"({spec.promql_expression.strip()})" if spec.promql_expression.strip() else default_expression(spec, ctx)


def alert_expression(spec, ctx):
    return f"{_expression(spec, ctx)} > {_number(spec.threshold)}"


def scale_in_expression(spec, ctx):
    return f"{_expression(spec, ctx)} < {_number(spec.scale_in_threshold)}"


def scales_in_by_alert(spec):
    """A step policy with a scale-in threshold gets the scale-in rule; target tracking decides from the metric."""
    return spec.policy_type == "step" and spec.scale_in_threshold is not None


def idle_peaks_query(specs, ctx):
    """One query for many target-tracking services: the highest average of each over its scale-in duration (a
    subquery of the same expression as `average_expression`), each series labelled with its service."""
    return " or ".join(
        f"max_over_time(({average_expression(spec, ctx)})[{int(spec.scale_in_duration_seconds)}s:])" for spec in specs
    )


def rule_group(spec, ctx):
    # What is pushed is never translated: it must not change with the language of whoever triggered the pass.
    metric_label = "CPU" if spec.metric == "cpu" else spec.metric
    labels = {"service": spec.service_name, "autoscale": "true", "managed_by": MANAGED_BY, "metric": spec.metric}
    rules = [
        {
            "alert": ALERT_NAMES.get(spec.metric, "AutoscaleHigh" + spec.metric.capitalize()),
            "expr": alert_expression(spec, ctx),
            "for": f"{int(spec.duration_seconds)}s",
            "labels": {**labels, DIRECTION_LABEL: SCALE_OUT},
            "annotations": {
                "summary": f"{spec.service_name}: {metric_label} above {_number(spec.threshold)}%",
                "threshold": _number(spec.threshold),
                "value": "{{ $value }}",
            },
        }
    ]
    if scales_in_by_alert(spec):
        rules.append(
            {
                "alert": SCALE_IN_ALERT_NAMES.get(spec.metric, "AutoscaleLow" + spec.metric.capitalize()),
                "expr": scale_in_expression(spec, ctx),
                "for": f"{int(spec.scale_in_duration_seconds)}s",
                "labels": {**labels, DIRECTION_LABEL: SCALE_IN},
                "annotations": {
                    "summary": f"{spec.service_name}: {metric_label} below {_number(spec.scale_in_threshold)}%",
                    "threshold": _number(spec.scale_in_threshold),
                    "value": "{{ $value }}",
                },
            }
        )
    return {"name": spec.group_name, "rules": rules}


def rules_text(specs, ctx, *, kept=None):
    """The services' rule file; `kept`: service name -> the group to write for it instead of its rendering (None:
    no group), for the services whose rules promtool refused."""
    kept = kept or {}
    groups = []
    for spec in sorted(specs, key=lambda s: s.service_name):
        if not spec.enabled:
            continue
        if spec.service_name not in kept:
            groups.append(rule_group(spec, ctx))
        elif kept[spec.service_name] is not None:
            groups.append(kept[spec.service_name])
    return RULES_HEADER + "\n".join(_emit({"groups": groups})) + "\n"


def _emit(value, indent=0):
    """Block YAML for plain data with simple keys, every string double-quoted (a JSON string is a valid YAML one).

    PyYAML's emitter needs over a second for 500 rule groups; this needs milliseconds.
    """
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_emit(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _emit(item, indent + 2)
                nested[0] = f"{pad}- {nested[0].lstrip()}"
                lines.extend(nested)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(value):
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(value, ensure_ascii=False)


def targets_path(ctx, service_name):
    return posixpath.join(ctx.targets_dir, f"{service_name}.json")


def targets_text(spec):
    group = {"targets": sorted(set(spec.targets)), "labels": {"service": spec.service_name}}
    return json.dumps([group], indent=2) + "\n"


# --- the portal's own rules --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PortalAlert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str


# Every instance of the portal exposes the same figures (they come from the shared database): `max without
# (instance)` makes one alert of them, whichever instances are scraped. A failure alerts from the time it ended
# (not from an increase of the counter, which a series' first scrape cannot show), for 15 minutes.
PORTAL_ALERTS = (
    PortalAlert(
        "VmautoscaleScaleOutFailed",
        'time() - max without (instance) (vmautoscale_scaling_last_failure_timestamp_seconds{action="scale_out"})'
        " < 900",
        "0s",
        "warning",
        "{{ $labels.service }}: a scale-out failed",
        "A scale-out of {{ $labels.service }} failed in the last 15 minutes (the pipeline stopped on an error): "
        "see the service's scale-out events in the portal.",
    ),
    PortalAlert(
        "VmautoscaleScaleInFailed",
        'time() - max without (instance) (vmautoscale_scaling_last_failure_timestamp_seconds{action="scale_in"}) < 900',
        "0s",
        "warning",
        "{{ $labels.service }}: a scale-in failed",
        "A scale-in of {{ $labels.service }} failed in the last 15 minutes: the VM may still run or hold its F5 "
        "member and IP; see the service's events in the portal.",
    ),
    PortalAlert(
        "VmautoscaleBreakerOpen",
        "max without (instance) (vmautoscale_breaker_open) == 1",
        "0s",
        "critical",
        "{{ $labels.service }}: scaling suspended (circuit breaker open)",
        "Consecutive scale-outs of {{ $labels.service }} failed and its scaling is suspended until a trial "
        "scale-out succeeds or an operator resumes it.",
    ),
    PortalAlert(
        "VmautoscaleOrphansFound",
        "max without (instance) (vmautoscale_orphans) > 0",
        "1m",
        "warning",
        "{{ $value }} orphan(s) of kind {{ $labels.kind }} left behind",
        "The orphan sweep found {{ $labels.kind }} orphans (made by the portal, in no inventory): see Fleet > "
        "Orphans, and remove them there or with manage.py sweep_orphans --fix.",
    ),
    PortalAlert(
        "VmautoscaleProvisioningFailing",
        "max without (instance) (vmautoscale_provisioning_last_pass_failed) == 1",
        "10m",
        "warning",
        "The portal's provisioning of the monitoring host or Jenkins is failing",
        "The last provisioning pass failed and none has succeeded for 10 minutes: the services' alert rules, "
        "routes or Jenkins jobs may be out of date. See Provisioning runs in the portal.",
    ),
    PortalAlert(
        "VmautoscaleEvaluatorStalled",
        "(time() - max without (instance) (vmautoscale_evaluator_last_pass_timestamp_seconds) > 180"
        " and on (job) max without (instance) (vmautoscale_evaluator_interval_seconds) > 0)"
        " or (max without (instance) (vmautoscale_evaluator_interval_seconds) > 0"
        " unless on (job) max without (instance) (vmautoscale_evaluator_last_pass_timestamp_seconds))",
        "2m",
        "critical",
        "The portal's evaluator has stopped",
        "The evaluator has not passed for over 3 minutes (or never): firing alerts are not re-decided and lost "
        "notifications not recovered. Check the task cluster (manage.py qcluster) and its schedules.",
    ),
    PortalAlert(
        "VmautoscaleEvaluatorFailing",
        "max without (instance) (vmautoscale_evaluator_last_pass_failed) == 1",
        "10m",
        "warning",
        "The portal's evaluator cannot read Alertmanager or Prometheus",
        "The evaluator's passes have failed for 10 minutes: see its last error under Evaluator state in the portal.",
    ),
    PortalAlert(
        "VmautoscalePortalDown",
        f'up{{job="{PORTAL_JOB_NAME}"}} == 0',
        "2m",
        "critical",
        "The VM Autoscale portal does not answer on /metrics",
        "Prometheus could not scrape {{ $labels.instance }} for 2 minutes: the portal (or its database) is down, "
        "and nothing scales.",
    ),
)
PORTAL_ALERT_NAMES = frozenset(alert.name for alert in PORTAL_ALERTS)
# Labels a rule sets itself (or Prometheus does): PORTAL_ALERT_LABELS may not change them. `autoscale` above all: an
# alert carrying it would be routed to a service's webhook.
RESERVED_LABELS = frozenset(
    {"alertname", "autoscale", "direction", "service", "action", "kind", "job", "instance", "managed_by"}
)
# Every alert of the portal about itself carries it: the label to route them by (docs/operations-guide.md).
PORTAL_ALERT_LABEL = "portal_alert"


def _portal_labels(ctx):
    """alert name -> the labels PORTAL_ALERT_LABELS adds ("" for every alert); RenderError on a label the portal
    keeps or an alert it does not have."""
    labels = {}
    for alert, name, value in ctx.alert_labels:
        if alert and alert not in PORTAL_ALERT_NAMES:
            raise RenderError(
                _("PORTAL_ALERT_LABELS names the alert %(alert)s; the portal's alerts are: %(names)s.")
                % {"alert": alert, "names": ", ".join(sorted(PORTAL_ALERT_NAMES))}
            )
        if name in RESERVED_LABELS or name == PORTAL_ALERT_LABEL:
            raise RenderError(
                _("PORTAL_ALERT_LABELS may not set the label %(label)s: the portal's rules set it themselves.")
                % {"label": name}
            )
        labels.setdefault(alert, {})[name] = value
    return labels


def portal_rule_group(ctx):
    extra = _portal_labels(ctx)
    rules = []
    for alert in PORTAL_ALERTS:
        labels = {"severity": alert.severity, **extra.get("", {}), **extra.get(alert.name, {})}
        rules.append(
            {
                "alert": alert.name,
                "expr": alert.expr,
                "for": alert.duration,
                "labels": {**labels, "managed_by": MANAGED_BY, PORTAL_ALERT_LABEL: "true"},
                "annotations": {"summary": alert.summary, "description": alert.description},
            }
        )
    return {"name": PORTAL_GROUP_NAME, "rules": rules}


def portal_rules_text(ctx):
    """The portal's own rule file: its alerts about itself (no group when PORTAL_ALERT_RULES is off)."""
    groups = [portal_rule_group(ctx)] if ctx.portal_alert_rules else []
    return PORTAL_RULES_HEADER + "\n".join(_emit({"groups": groups})) + "\n"


# --- prometheus.yml ----------------------------------------------------------------------------------------------
def portal_scrape_job(ctx, current=None):
    """The scrape job of the portal's /metrics: the parts the portal sets (address, path, token) over `current`, the
    job as it is on the host, whose other keys (scrape_interval, tls_config, ...) an operator may set and are kept.
    A token file the operator gave (`authorization.credentials_file`) is kept instead of the token."""
    url = urlsplit(ctx.portal_metrics_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RenderError(_("%(url)s is not a URL Prometheus can scrape.") % {"url": ctx.portal_metrics_url})
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    port = url.port or (443 if url.scheme == "https" else 80)
    job = {key: value for key, value in (current or {}).items() if key != "authorization"}
    job.update(
        job_name=PORTAL_JOB_NAME,
        scheme=url.scheme,
        metrics_path=url.path or "/metrics",
        static_configs=[{"targets": [f"{host}:{port}"]}],
    )
    if ctx.scrape_interval:
        job["scrape_interval"] = ctx.scrape_interval
    authorization = (current or {}).get("authorization")
    if isinstance(authorization, dict) and authorization.get("credentials_file"):
        job["authorization"] = authorization
    elif ctx.metrics_token:
        job["authorization"] = {"type": "Bearer", "credentials": ctx.metrics_token}
    return {"job_name": job.pop("job_name"), **job}


def scrape_job(ctx):
    return {
        "job_name": SCRAPE_JOB_NAME,
        "file_sd_configs": [{"files": [posixpath.join(ctx.targets_dir, "*.json")], "refresh_interval": "1m"}],
    }


def prometheus_config_text(current, ctx):
    """prometheus.yml with the portal's scrape job and rule file added if missing; otherwise the text as it is."""
    doc = _load_mapping(current, ctx.prometheus_config_file)
    changed = False
    jobs = doc.get("scrape_configs")
    if jobs is None:
        jobs = doc["scrape_configs"] = []
    if not any(isinstance(job, dict) and job.get("job_name") == SCRAPE_JOB_NAME for job in jobs):
        jobs.append(scrape_job(ctx))
        changed = True
    if ctx.portal_scrape_job:
        # The portal's own job follows the settings (its address and token may change); the rest of it is kept.
        index = next(
            (i for i, job in enumerate(jobs) if isinstance(job, dict) and job.get("job_name") == PORTAL_JOB_NAME), None
        )
        current_job = jobs[index] if index is not None else None
        desired_job = portal_scrape_job(ctx, current_job)
        if current_job != desired_job:
            if index is None:
                jobs.append(desired_job)
            else:
                jobs[index] = desired_job
            changed = True
    base = posixpath.dirname(ctx.prometheus_config_file)
    for rules_file in (ctx.rules_file, ctx.portal_rules_file) if ctx.portal_rules_file else (ctx.rules_file,):
        patterns = doc.get("rule_files") or []
        if not any(fnmatch(rules_file, posixpath.join(base, str(p))) for p in patterns):
            doc["rule_files"] = [*patterns, rules_file]
            changed = True
    return _yaml(doc) if changed else current


def _load_mapping(text, path):
    try:
        doc = _load(text) if text else {}
    except yaml.YAMLError as exc:
        raise RenderError(_("%(path)s is not valid YAML: %(error)s") % {"path": path, "error": exc}) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise RenderError(_("%(path)s does not hold a YAML mapping.") % {"path": path})
    return doc


# --- alertmanager.yml --------------------------------------------------------------------------------------------
def route(spec):
    return {
        "receiver": spec.receiver_name,
        "matchers": [f'service="{spec.service_name}"', 'autoscale="true"'],
        "group_by": ["alertname", "service"],
        "group_wait": "1s",
        "group_interval": "5s",
        "repeat_interval": "1h",
        "continue": False,
    }


def receiver(spec, ctx, *, mask=False):
    return {
        "name": spec.receiver_name,
        "webhook_configs": [
            {
                "url": ctx.webhook_url(spec.service_name),
                "send_resolved": True,
                "http_config": {
                    "authorization": {
                        "type": "Bearer",
                        "credentials": SECRET_MASK if mask else ctx.webhook_token,
                    }
                },
            }
        ],
    }


def _managed(name):
    return isinstance(name, str) and name.startswith(PREFIX)


def alertmanager_config_text(current, specs, ctx, path="alertmanager.yml"):
    """alertmanager.yml with the portal's routes and receivers replaced by the desired ones, all else kept."""
    original = _load_mapping(current, path)
    top = original.get("route")
    if not isinstance(top, dict):
        raise RenderError(_("%(path)s has no top-level route; the portal adds its routes under it.") % {"path": path})
    enabled = [spec for spec in sorted(specs, key=lambda s: s.service_name) if spec.enabled]
    others = [r for r in (top.get("routes") or []) if not (isinstance(r, dict) and _managed(r.get("receiver")))]
    # The portal's routes come first: their matchers are specific and they must not be shadowed by a catch-all.
    new_routes = [route(spec) for spec in enabled] + others
    new_top = dict(top)
    if new_routes or "routes" in top:
        new_top["routes"] = new_routes
    receivers = [r for r in (original.get("receivers") or []) if not (isinstance(r, dict) and _managed(r.get("name")))]
    # Shallow copies: the unmanaged parts are shared, never changed.
    doc = {**original, "route": new_top, "receivers": receivers + [receiver(spec, ctx) for spec in enabled]}
    if doc == original:
        return current
    return ALERTMANAGER_HEADER + _yaml(doc)


def managed_part(kind, text, ctx):
    """The part of a shared file (prometheus.yml, alertmanager.yml) that the portal manages, as YAML: what every
    reader of a pass may see. Rule and target files are the portal's whole: returned as they are."""
    if kind not in ("prometheus_config", "alertmanager_config") or text is None:
        return text
    try:
        doc = _load(text) or {}
    except yaml.YAMLError:
        return "# (not valid YAML)\n"
    if not isinstance(doc, dict):
        return "# (not a YAML mapping)\n"
    if kind == "prometheus_config":
        names = {SCRAPE_JOB_NAME, PORTAL_JOB_NAME} if ctx.portal_scrape_job else {SCRAPE_JOB_NAME}
        jobs = [j for j in doc.get("scrape_configs") or [] if isinstance(j, dict) and j.get("job_name") in names]
        base = posixpath.dirname(ctx.prometheus_config_file)
        own = [f for f in (ctx.rules_file, ctx.portal_rules_file) if f]
        rules = [p for p in doc.get("rule_files") or [] if any(fnmatch(f, posixpath.join(base, str(p))) for f in own)]
        return _yaml({"scrape_configs": jobs, "rule_files": rules})
    top = doc.get("route") if isinstance(doc.get("route"), dict) else {}
    routes = [r for r in top.get("routes") or [] if isinstance(r, dict) and _managed(r.get("receiver"))]
    receivers = [r for r in doc.get("receivers") or [] if isinstance(r, dict) and _managed(r.get("name"))]
    return _yaml({"route": {"routes": routes}, "receivers": receivers})


# --- Jenkins -----------------------------------------------------------------------------------------------------
def job_parameters(spec, ctx):
    """Parameter name -> default value, as the job defines them (the contract's parameters, pipeline/contract.py)."""
    return contract.build_parameters(
        event_id="",
        service_name=spec.service_name,
        callback_url=ctx.portal_url,
        callback_token="",
        vm_count=spec.scale_out_step,
        template_name=spec.template_name,
        vm_name_pattern=spec.vm_name_pattern,
        datacenter=spec.datacenter,
        cluster=spec.cluster,
        resource_pool=spec.resource_pool,
        folder=spec.folder,
        datastore=spec.datastore,
        network=spec.network,
        ip_pool_id=spec.ip_pool_id,
        f5_pool=spec.f5_pool,
        f5_partition=spec.f5_partition,
        f5_member_port=spec.f5_member_port,
        action="",
        instance_ids="",
        drain_timeout=spec.drain_timeout_seconds,
    )


def job_xml(spec, ctx):
    pad = " " * 8
    parameters = []
    variables = []
    defaults = job_parameters(spec, ctx)
    for parameter in contract.PARAMETERS:
        name, description, default = parameter.name, parameter.description, escape(defaults[parameter.name])
        if parameter.secret:
            parameters.append(
                f"{pad}<hudson.model.PasswordParameterDefinition>\n"
                f"{pad}  <name>{name}</name>\n"
                f"{pad}  <description>{escape(description)}</description>\n"
                f"{pad}  <defaultValue></defaultValue>\n"
                f"{pad}</hudson.model.PasswordParameterDefinition>"
            )
        else:
            parameters.append(
                f"{pad}<hudson.model.StringParameterDefinition>\n"
                f"{pad}  <name>{name}</name>\n"
                f"{pad}  <description>{escape(description)}</description>\n"
                f"{pad}  <defaultValue>{default}</defaultValue>\n"
                f"{pad}  <trim>true</trim>\n"
                f"{pad}</hudson.model.StringParameterDefinition>"
            )
        if name not in contract.TRIGGER_VARIABLES:
            continue
        variables.append(
            f"{pad}    <org.jenkinsci.plugins.gwt.GenericVariable>\n"
            f"{pad}      <expressionType>JSONPath</expressionType>\n"
            f"{pad}      <key>{name}</key>\n"
            f"{pad}      <value>$.{name}</value>\n"
            f"{pad}      <regexpFilter></regexpFilter>\n"
            f"{pad}      <defaultValue></defaultValue>\n"
            f"{pad}    </org.jenkinsci.plugins.gwt.GenericVariable>"
        )
    description = spec.description or f"Scale-out pipeline of {spec.service_name}."
    template = _job_template()
    return template.substitute(
        description=escape(f"{description} (managed by the VM Autoscale portal)"),
        parameters="\n".join(parameters),
        generic_variables="\n".join(variables),
        service_name=escape(spec.service_name),
        trigger_credential_id=escape(contract.TRIGGER_CREDENTIAL_ID),
        script=escape(ctx.jenkinsfile),
        disabled="false" if spec.enabled else "true",
    )


_template_cache = {}


def _job_template():
    """The job template, read again only when the file changed."""
    mtime = JOB_TEMPLATE.stat().st_mtime_ns
    if _template_cache.get("mtime") != mtime:
        _template_cache.update(mtime=mtime, template=string.Template(JOB_TEMPLATE.read_text()))
    return _template_cache["template"]


def normalize_job_xml(text):
    """A canonical form of a job's XML: Jenkins re-serializes what it is given and adds plugin versions."""
    if text is None:
        return None
    try:
        root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except ET.ParseError:
        return text
    for element in root.iter():
        element.attrib.pop("plugin", None)
        if element.text is not None and not element.text.strip():
            element.text = None
        element.tail = None
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=False)


# --- previews and digests ---------------------------------------------------------------------------------------
def shown(text, ctx):
    """`text` as people may see it (previews, diffs, errors): every secret masked, the portal's own URLs kept."""
    known = [secret for secret in (ctx.webhook_token, ctx.metrics_token) if secret]
    return redaction.redact(text, known=known, public=[ctx.portal_url + "/"])


def preview_rule(spec, ctx):
    return shown(_yaml({"groups": [rule_group(spec, ctx)]}), ctx)


def preview_route(spec, ctx):
    return shown(_yaml({"route": {"routes": [route(spec)]}, "receivers": [receiver(spec, ctx, mask=True)]}), ctx)


def preview_job(spec, ctx):
    return shown(job_xml(spec, ctx), ctx)


# What a rendering depends on besides its inputs: this module, the contract and (per pass) the job template.
CODE_DIGEST = hashlib.sha256(Path(__file__).read_bytes() + b"\x00" + Path(contract.__file__).read_bytes()).hexdigest()


def context_digest(ctx):
    """One digest of the settings and the code every rendering depends on (the job template included)."""
    return _context_digest(ctx, _job_template().template)


@functools.lru_cache(maxsize=8)
def _context_digest(ctx, template_text):
    return digest(json.dumps([CODE_DIGEST, template_text, dataclasses.asdict(ctx)], sort_keys=True))


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ServiceSpec))


def spec_digest(spec, ctx, *, context=None):
    """One digest of the inputs of everything pushed for a config (its snapshot, the settings and the renderer's
    code): it changes when anything the host or Jenkins gets could change, and is computed without rendering.
    `context`: context_digest(ctx), when the caller has it already."""
    fields = json.dumps([getattr(spec, name) for name in _SPEC_FIELDS], default=str)
    return digest((context or context_digest(ctx)) + "\x00" + fields)


def spec_digests(specs, ctx):
    """service name -> spec_digest of each of `specs`."""
    context = context_digest(ctx)
    return {spec.service_name: spec_digest(spec, ctx, context=context) for spec in specs}


def host_inputs_digest(specs, ctx):
    """One digest of the inputs of the host's files: equal digests render the same rule, target and Alertmanager
    files (given the same shared files on the host)."""
    parts = sorted(f"{name}\x00{value}" for name, value in spec_digests(specs, ctx).items())
    return digest("\x01".join([context_digest(ctx), *parts]))
