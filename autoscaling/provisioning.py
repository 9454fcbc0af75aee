"""The reconcile pass: make the monitoring host and Jenkins match the desired state of every config.

A pass renders the whole desired state (rendering.py), reads what is on the host and in Jenkins, and only where
they differ writes NAME.tmp, validates it on the host (promtool / amtool), renames it over the live file, reloads
Prometheus and Alertmanager once each, and puts the previous files back (and reloads again) if a reload fails.
Jenkins jobs are created, updated (which also enables or disables them) and deleted to match.

`reconcile(check_only=...)` is the one entry point; it does no database writes itself and returns a `PassResult`
that services.py records. The caller holds the provisioning lease, so two passes never run at once.
"""

import difflib
import logging
import posixpath
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from django.conf import settings
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from autoscaling import rendering
from autoscaling.rendering import RenderContext, RenderError, ServiceSpec
from common.clients import RELOAD_TIMEOUT, alertmanager_client, jenkins_client, prometheus_client, ssh_client
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)

JENKINS_WORKERS = 16
DIFF_LIMIT = 200_000
NODE_EXPORTER_PORT = 9100
OUTAGE_CODES = ("unreachable", "timeout")


@dataclass
class FileChange:
    path: str
    kind: str  # rules, prometheus_config, alertmanager_config, targets
    current: str | None
    desired: str | None  # None: remove the file
    current_digest: str | None = None

    @property
    def action(self):
        if self.desired is None:
            return "remove"
        return "create" if self.current is None and self.current_digest is None else "update"


@dataclass
class JobChange:
    name: str
    action: str  # create, update, delete
    xml: str | None = None
    service_name: str | None = None


@dataclass
class PassResult:
    """What a pass found and did; services.py stores it on the ProvisioningRun and the configs."""

    changed_files: list = field(default_factory=list)
    jenkins_changes: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    reloads: list = field(default_factory=list)
    ssh_round_trips: int = 0
    diff: str = ""
    # One error for the host side (with the services a validator named, if any) and one per Jenkins job.
    host_error: str = ""
    host_error_services: set = field(default_factory=set)
    jenkins_errors: dict = field(default_factory=dict)  # service name -> message
    pushed_digests: dict = field(default_factory=dict)
    managed_jobs: list = field(default_factory=list)

    @property
    def differs(self):
        return bool(self.changed_files or self.jenkins_changes)

    @property
    def failed(self):
        return bool(self.host_error or self.jenkins_errors)


# --- inputs from settings and the database -----------------------------------------------------------------------
def render_context():
    return RenderContext(
        portal_url=settings.PORTAL_URL,
        webhook_token=settings.WEBHOOK_TOKEN,
        prometheus_config_file=settings.PROMETHEUS_CONFIG_FILE,
        rules_file=settings.PROMETHEUS_RULES_FILE,
        targets_dir=settings.PROMETHEUS_TARGETS_DIR,
        rate_window=getattr(settings, "AUTOSCALE_RATE_WINDOW", "1m"),
        jenkinsfile=rendering.JENKINSFILE.read_text() if rendering.JENKINSFILE.is_file() else "",
    )


def trigger_token(service_name):
    """The Generic Webhook Trigger token of a service's job: secret, stable, different for every job."""
    return salted_hmac("vmautoscale.jenkins-trigger", service_name, algorithm="sha256").hexdigest()[:40]


def service_spec(config, extra_targets=()):
    return ServiceSpec(
        service_name=config.service_name,
        enabled=config.enabled,
        metric=config.metric,
        threshold=config.threshold,
        duration_seconds=config.duration_seconds,
        promql_expression=config.promql_expression or "",
        description=config.description or "",
        scale_out_step=config.scale_out_step,
        template_name=config.template.name if config.template_id else "",
        datacenter=config.datacenter,
        cluster=config.cluster,
        resource_pool=config.resource_pool,
        folder=config.folder,
        datastore=config.datastore,
        network=config.network,
        vm_name_pattern=config.vm_name_pattern,
        ip_pool_id=config.ip_pool_id,
        f5_pool=config.f5_pool,
        f5_partition=config.f5_partition,
        f5_member_port=config.f5_member_port,
        targets=tuple(sorted({*(config.monitored_instances or []), *extra_targets})),
        trigger_token=trigger_token(config.service_name),
    )


def service_specs():
    """Snapshots of every config, with the addresses of its VMs the pipeline put in use as scrape targets."""
    from autoscaling.models import AutoscalingConfig, IpAllocation

    vm_targets = {}
    in_use = IpAllocation.objects.filter(state=IpAllocation.State.IN_USE, event__isnull=False).values_list(
        "event__config__service_name", "address"
    )
    port = getattr(settings, "NODE_EXPORTER_PORT", NODE_EXPORTER_PORT)
    for service_name, address in in_use:
        vm_targets.setdefault(service_name, []).append(f"{address}:{port}")
    configs = AutoscalingConfig.objects.select_related("template").order_by("service_name")
    return [service_spec(config, vm_targets.get(config.service_name, ())) for config in configs]


# --- the pass ----------------------------------------------------------------------------------------------------
def reconcile(*, specs, pushed_digests, managed_jobs, check_only=False, full_check=True, renew=lambda: None):
    """One pass over the host and Jenkins. Never raises for an outage: errors are in the result.

    The host's files are always compared in full (a few reads). Jenkins offers no bulk read of job configs, so
    without `full_check` a job whose rendering is unchanged since its last push is not read back; the periodic
    pass, `sync_autoscaling` and "sync now" do read every job and so find and repair hand edits. `renew` is
    called now and then from this thread to keep the caller's lease.
    """
    ctx = render_context()
    result = PassResult(pushed_digests=dict(pushed_digests), managed_jobs=sorted(managed_jobs))
    diffs = []
    # Jenkins and the host are independent: Jenkins is done in the background while the host is handled.
    with ThreadPoolExecutor(max_workers=1) as executor:
        jenkins_future = executor.submit(
            _reconcile_jenkins, specs, ctx, pushed_digests, managed_jobs, check_only, full_check
        )
        try:
            _reconcile_host(specs, ctx, pushed_digests, check_only, result, diffs, renew)
        finally:
            while not futures_wait([jenkins_future], timeout=20).done:
                renew()
    jenkins_part = jenkins_future.result()
    result.jenkins_changes = jenkins_part["changes"]
    result.jenkins_errors = {name: _mask(message, ctx) for name, message in jenkins_part["errors"].items()}
    result.drift += jenkins_part["drift"]
    result.managed_jobs = jenkins_part["managed_jobs"]
    result.pushed_digests = {
        **{k: v for k, v in result.pushed_digests.items() if not k.startswith("jenkins:")},
        **jenkins_part["digests"],
    }
    diffs += jenkins_part["diffs"]
    result.host_error = _mask(result.host_error, ctx)
    text = "\n".join(diffs)
    result.diff = _mask(text[:DIFF_LIMIT] + ("\n... (diff cut)" if len(text) > DIFF_LIMIT else ""), ctx)
    return result


def _mask(text, ctx):
    secrets = [ctx.webhook_token] if ctx.webhook_token else []
    for secret in secrets:
        text = text.replace(secret, rendering.SECRET_MASK)
    return re.sub(r"(<token>)[^<]+(</token>)", r"\1" + rendering.SECRET_MASK + r"\2", text)


def _unified(path, current, desired):
    return "".join(
        difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            (desired or "").splitlines(keepends=True),
            fromfile=f"{path} (host)",
            tofile=f"{path} (portal)",
        )
    )


def _reconcile_host(specs, ctx, pushed_digests, check_only, result, diffs, renew):
    ssh = ssh_client()
    try:
        plan, desired_files = _plan_host(ssh, specs, ctx)
        for change in plan:
            if change.desired is not None and change.current is None and change.current_digest is not None:
                # Only the digest was read (targets): fetch the text for the diff.
                change.current = ssh.read_file(change.path)
            diffs.append(_unified(change.path, change.current, change.desired))
            # Drift: the portal's wish is what it pushed last time, yet the host differs (or holds a file the
            # portal never pushed): someone changed the host by hand.
            previous = pushed_digests.get(change.path)
            if change.desired is None:
                hand_made = previous is None and not change.path.endswith(".tmp")
            else:
                hand_made = previous is not None and rendering.digest(change.desired) == previous
            if hand_made:
                result.drift.append(change.path)
        result.changed_files = [{"path": c.path, "action": c.action} for c in plan]
        if not check_only and plan:
            result.reloads = _apply_host(ssh, plan, ctx, renew)
        if not check_only:
            digests = {k: v for k, v in pushed_digests.items() if k.startswith("jenkins:")}
            for path, text in desired_files.items():
                digests[path] = rendering.digest(text)
            result.pushed_digests.update(digests)
            for key in [k for k in result.pushed_digests if not k.startswith("jenkins:") and k not in digests]:
                del result.pushed_digests[key]
    except _ValidationFailed as exc:
        result.host_error = exc.message
        result.host_error_services = exc.services
    except (IntegrationError, RenderError) as exc:
        result.host_error = str(exc)
    finally:
        result.ssh_round_trips = ssh.round_trips
        ssh.close()


class _ValidationFailed(Exception):
    def __init__(self, message, services):
        super().__init__(message)
        self.message = message
        self.services = services


def _read_digests(ssh, directory, paths):
    """path -> sha256 of each of `paths` (the *.json files of `directory`), with one command on the host.

    `find -exec ... +` keeps the command line short however many files there are. A file whose line is missing
    from the output (it vanished, or the answer came back cut short) is read and hashed here instead, so a short
    answer can never make a file look absent.
    """
    if not paths:
        return {}
    argv = ["find", directory, "-maxdepth", "1", "-type", "f", "-name", "*.json", "-exec", "sha256sum", "--", "{}", "+"]
    result = ssh.run(argv, timeout=60)
    digests = {}
    wanted = set(paths)
    for line in result.stdout.splitlines():
        value, _sep, path = line.partition("  ")
        if path in wanted and len(value) == 64:
            digests[path] = value
    for path in wanted - set(digests):
        text = ssh.read_file(path)
        if text is not None:
            digests[path] = rendering.digest(text)
    return digests


def _plan_host(ssh, specs, ctx):
    """The files that differ between the host and the desired state (empty when the host is in step).

    Also returns every managed file's desired text (path -> text), to remember what was pushed.
    """
    enabled = [spec for spec in specs if spec.enabled]
    plan = []
    rules_current = ssh.read_file(ctx.rules_file)
    rules_desired = rendering.rules_text(specs, ctx)
    if rules_current != rules_desired:
        plan.append(FileChange(ctx.rules_file, "rules", rules_current, rules_desired))
    prom_current = ssh.read_file(ctx.prometheus_config_file)
    if prom_current is None:
        raise RenderError(_("%(path)s does not exist on the monitoring host.") % {"path": ctx.prometheus_config_file})
    prom_desired = rendering.prometheus_config_text(prom_current, ctx)
    if prom_desired != prom_current:
        plan.append(FileChange(ctx.prometheus_config_file, "prometheus_config", prom_current, prom_desired))
    am_path = settings.ALERTMANAGER_CONFIG_FILE
    am_current = ssh.read_file(am_path)
    if am_current is None:
        raise RenderError(_("%(path)s does not exist on the monitoring host.") % {"path": am_path})
    am_desired = rendering.alertmanager_config_text(am_current, specs, ctx, path=am_path)
    if am_desired != am_current:
        plan.append(FileChange(am_path, "alertmanager_config", am_current, am_desired))

    # Target files: the directory belongs to the portal, so any other *.json (or a leftover .tmp) there goes.
    names = ssh.listdir(ctx.targets_dir, missing_ok=True)
    existing = [posixpath.join(ctx.targets_dir, n) for n in names if n.endswith(".json")]
    desired_targets = {rendering.targets_path(ctx, spec.service_name): rendering.targets_text(spec) for spec in enabled}
    digests = _read_digests(ssh, ctx.targets_dir, existing)
    for path in existing:
        if path not in desired_targets:
            plan.append(FileChange(path, "targets", None, None, current_digest=digests.get(path, "?")))
    for name in names:
        if name.endswith(".tmp"):
            plan.append(FileChange(posixpath.join(ctx.targets_dir, name), "targets", None, None, current_digest="?"))
    for path, text in desired_targets.items():
        current_digest = digests.get(path)
        if current_digest != rendering.digest(text):
            plan.append(FileChange(path, "targets", None, text, current_digest=current_digest))
    for change in plan:
        if change.current is not None and change.current_digest is None:
            change.current_digest = rendering.digest(change.current)
    desired_files = {ctx.rules_file: rules_desired, ctx.prometheus_config_file: prom_desired, am_path: am_desired}
    desired_files.update(desired_targets)
    return plan, desired_files


def _apply_host(ssh, plan, ctx, renew):
    """Validate, swap and reload. Raises _ValidationFailed or IntegrationError; the host is then as before."""
    reloads = []
    by_kind = {}
    for change in plan:
        by_kind.setdefault(change.kind, []).append(change)
    prometheus = by_kind.get("rules", []) + by_kind.get("prometheus_config", [])
    alertmanager = by_kind.get("alertmanager_config", [])

    # Every file that needs a validator is written as NAME.tmp and validated before anything is swapped, so a
    # rejected render leaves the host exactly as it was.
    _write_and_validate(ssh, prometheus + alertmanager)
    renew()

    # Scrape targets next: Prometheus watches these files, so they need no reload.
    targets = by_kind.get("targets", [])
    if any(c.desired is not None for c in targets):
        ssh.makedirs(ctx.targets_dir)
    for number, change in enumerate(targets, start=1):
        if change.desired is None:
            ssh.remove(change.path)
        else:
            ssh.write_file(change.path + ".tmp", change.desired)
            ssh.rename(change.path + ".tmp", change.path)
        if number % 200 == 0:
            renew()

    for system, changes in (("prometheus", prometheus), ("alertmanager", alertmanager)):
        if not changes:
            continue
        swapped = []
        try:
            for change in changes:
                ssh.rename(change.path + ".tmp", change.path)
                swapped.append(change)
            _reload(ssh, system)
        except IntegrationError as exc:
            for change in changes:
                if change not in swapped:
                    _remove_quietly(ssh, change.path + ".tmp")
            _restore(ssh, swapped)
            if swapped:
                _reload_quietly(ssh, system)
            raise IntegrationError(
                _("%(system)s refused the new files (%(error)s); the previous files were put back.")
                % {"system": system.capitalize(), "error": exc},
                system=system,
                permanent=exc.permanent,
            ) from exc
        reloads.append(system)
        renew()
    return reloads


def _write_and_validate(ssh, changes):
    """Write each change as NAME.tmp and validate it on the host; on a refusal remove the temp files and raise."""
    try:
        for change in changes:
            ssh.makedirs(posixpath.dirname(change.path))
            ssh.write_file(change.path + ".tmp", change.desired)
        for change in changes:
            if change.kind == "alertmanager_config":
                _validate_alertmanager(ssh, change)
            else:
                _validate_prometheus(ssh, change)
    except Exception:
        for change in changes:
            _remove_quietly(ssh, change.path + ".tmp")
        raise


def _restore(ssh, changes):
    for change in changes:
        try:
            if change.current is None:
                ssh.remove(change.path)
            else:
                ssh.write_file(change.path + ".tmp", change.current)
                ssh.rename(change.path + ".tmp", change.path)
        except IntegrationError:
            logger.exception("could not put back %s", change.path)


def _remove_quietly(ssh, path):
    try:
        ssh.remove(path)
    except IntegrationError:
        logger.warning("could not remove %s", path)


def _check(ssh, argv, what, path):
    result = ssh.run(argv, timeout=60)
    if result.exit_status == 0:
        return
    output = (result.stderr.strip() + "\n" + result.stdout.strip()).strip()
    output = output.replace(path + ".tmp", path)
    services = set(re.findall(re.escape(rendering.PREFIX) + r"([a-z][a-z0-9-]*[a-z0-9])", output))
    raise _ValidationFailed(
        _("%(tool)s rejected %(path)s; nothing was changed on the host:\n%(output)s")
        % {"tool": what, "path": path, "output": output},
        services,
    )


def _validate_prometheus(ssh, change):
    promtool = settings.PROMTOOL_PATH
    if change.kind == "rules":
        _check(ssh, [promtool, "check", "rules", change.path + ".tmp"], "promtool", change.path)
    else:
        _check(ssh, [promtool, "check", "config", change.path + ".tmp"], "promtool", change.path)


def _validate_alertmanager(ssh, change):
    _check(ssh, [settings.AMTOOL_PATH, "check-config", change.path + ".tmp"], "amtool", change.path)


def _reload(ssh, system):
    command = settings.PROMETHEUS_RELOAD_COMMAND if system == "prometheus" else settings.ALERTMANAGER_RELOAD_COMMAND
    if command:
        result = ssh.run(["sh", "-c", command], timeout=300)
        if result.exit_status != 0:
            raise IntegrationError(
                _("the reload command `%(command)s` exited with %(status)d: %(output)s")
                % {"command": command, "status": result.exit_status, "output": (result.stderr or result.stdout)[-500:]},
                system=system,
            )
        return
    if system == "prometheus":
        with prometheus_client(timeout=RELOAD_TIMEOUT) as client:
            client.reload()
    else:
        with alertmanager_client(timeout=RELOAD_TIMEOUT) as client:
            client.reload()


def _reload_quietly(ssh, system):
    try:
        _reload(ssh, system)
    except IntegrationError:
        logger.exception("reload of %s after restoring its files failed", system)


# --- Jenkins -----------------------------------------------------------------------------------------------------
def _reconcile_jenkins(specs, ctx, pushed_digests, managed_jobs, check_only, full_check):
    part = {"changes": [], "errors": {}, "drift": [], "diffs": [], "digests": {}, "managed_jobs": sorted(managed_jobs)}
    desired = {}
    for spec in specs:
        xml = rendering.job_xml(spec, ctx)
        key = f"jenkins:{spec.job_name}"
        want_digest = rendering.digest(xml)
        if not full_check and spec.job_name in managed_jobs and pushed_digests.get(key) == want_digest:
            part["digests"][key] = want_digest
            continue
        desired[spec.job_name] = (spec, xml, want_digest)
    obsolete = sorted(set(managed_jobs) - {spec.job_name for spec in specs})
    clients = []
    local = threading.local()

    def client():
        # One client (one HTTP session) per worker thread.
        if getattr(local, "client", None) is None:
            local.client = jenkins_client()
            clients.append(local.client)
        return local.client

    # Once Jenkins is found down, the other jobs are not tried: 500 time-outs would hold the pass for minutes.
    outage = []

    def call(fn, *args):
        if outage:
            raise outage[0]
        try:
            return fn(*args)
        except IntegrationError as exc:
            if exc.code in OUTAGE_CODES:
                outage.append(exc)
            raise

    def compare(name):
        try:
            current = call(lambda: client().job_config(name))
        except IntegrationError as exc:
            return name, None, exc
        return name, current, None

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=JENKINS_WORKERS) as pool:
        compared = list(pool.map(compare, sorted(desired)))
        changes = []
        for name, current, error in compared:
            spec, xml, want_digest = desired[name]
            if error is not None:
                part["errors"][spec.service_name] = str(error)
                continue
            part["digests"][f"jenkins:{name}"] = want_digest
            if current is None:
                changes.append(JobChange(name, "create", xml, spec.service_name))
                part["diffs"].append(_unified(f"jenkins job {name}", None, xml))
                continue
            # Jenkins re-serializes what it is given: compare canonical forms when the text differs.
            if current != xml and rendering.normalize_job_xml(current) != rendering.normalize_job_xml(xml):
                changes.append(JobChange(name, "update", xml, spec.service_name))
                part["diffs"].append(_unified(f"jenkins job {name}", current, xml))
                # Unchanged in the portal since the last push, yet different in Jenkins: edited by hand.
                if pushed_digests.get(f"jenkins:{name}") == want_digest:
                    part["drift"].append(f"jenkins job {name}")
        for name in obsolete:
            changes.append(JobChange(name, "delete"))
            part["diffs"].append(f"--- jenkins job {name} (host)\n+++ jenkins job {name} (portal: deleted)\n")
        part["changes"] = [{"job": c.name, "action": c.action} for c in changes]
        if check_only:
            return part

        def apply(change):
            try:
                if change.action == "delete":
                    call(lambda: client().delete_job(change.name))
                else:
                    call(lambda: client().create_or_update_job(change.name, change.xml))
            except IntegrationError as exc:
                return change, exc
            return change, None

        managed = set(managed_jobs) | set(desired)
        for change, error in pool.map(apply, changes):
            if error is None:
                if change.action == "delete":
                    managed.discard(change.name)
                continue
            if change.action == "delete":
                if getattr(error, "code", None) in ("not_found", "http_404"):
                    managed.discard(change.name)
                else:
                    logger.warning("could not delete Jenkins job %s: %s", change.name, error)
                    part["errors"][change.name] = str(error)
            else:
                part["errors"][change.service_name] = str(error)
                part["digests"].pop(f"jenkins:{change.name}", None)
        part["managed_jobs"] = sorted(managed)
    for jenkins in clients:
        close = getattr(jenkins, "close", None)
        if close:
            close()
    logger.debug("jenkins part took %.2fs", time.monotonic() - started)
    return part
