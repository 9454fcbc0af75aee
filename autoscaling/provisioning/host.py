"""The monitoring host's side of a pass: plan, then validate, swap, reload and, when a reload fails, restore.

A pass first reads the digest of every managed file with one command on the host (`_host_digests`): when they are
the digests the last pass pushed and the inputs (`rendering.host_inputs_digest`) are those of that pass, the host is
in step and nothing is read, parsed or rendered. Otherwise the host's files are compared in full (a few reads).
Only where they differ from the desired state does a pass write NAME.tmp, validate it on the host (promtool /
amtool), rename it over the live file, reload Prometheus and Alertmanager once each, and put the previous files
back (and reload again) if a reload fails.
"""

import logging
import posixpath
import re
from dataclasses import dataclass, field

import yaml
from django.conf import settings
from django.utils.translation import gettext as _

from autoscaling import rendering
from autoscaling.provisioning.jenkins_jobs import DIGEST_PREFIX as JOB_PREFIX
from autoscaling.rendering import RenderError
from common.clients import RELOAD_TIMEOUT, alertmanager_client, prometheus_client, ssh_client
from common.faults import fault_point
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)

# The inputs of the host's files as last pushed, kept among the pushed digests beside the files' paths: all of
# them under INPUTS_KEY, and those of each shared file under INPUTS_PREFIX + its path.
INPUTS_PREFIX = "inputs:"
INPUTS_KEY = INPUTS_PREFIX + "host"
_DIGESTS_END = "vmautoscale-digests-end"
# Every managed file's sha256 in one round trip: the named files (the two rule files, prometheus.yml and
# alertmanager.yml), then the *.json and *.tmp files of the targets directory; the last line marks a complete
# answer. $1 is the directory, the rest the files.
_DIGESTS_SCRIPT = (
    'dir=$1; shift; sha256sum -- "$@" 2>/dev/null; '
    'if [ -d "$dir" ]; then find "$dir" -maxdepth 1 -type f \\( -name "*.json" -o -name "*.tmp" \\) '
    "-exec sha256sum -- {} + 2>/dev/null; fi; echo " + _DIGESTS_END
)


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
class HostOutcome:
    """What the host side of a pass found and did. Errors are in here: `reconcile` does not raise for them."""

    plan: list = field(default_factory=list)  # FileChange, each with the host's text (for the diff)
    drift: list = field(default_factory=list)
    reloads: list = field(default_factory=list)
    digests: dict | None = None  # path -> digest of every managed file as pushed; None: what was pushed stays
    ssh_round_trips: int = 0
    error: str = ""
    error_services: set = field(default_factory=set)  # the services a validator named, if any
    # The services whose rules promtool refused: left as they are on the host while the others were pushed.
    held_back: set = field(default_factory=set)

    @property
    def changed_files(self):
        return [{"path": change.path, "action": change.action} for change in self.plan]


class ValidationFailed(Exception):
    def __init__(self, message, services, path="", output=""):
        super().__init__(message)
        self.message = message
        self.services = services
        self.path = path
        self.output = output


def reconcile(specs, ctx, pushed_digests, *, check_only, renew, reload_all=False):
    """Compare the host's files with the desired state and, unless `check_only`, push what differs (and with
    `reload_all`, reload both systems even where nothing differs)."""
    outcome = HostOutcome()
    ssh = ssh_client()
    try:
        inputs = _inputs_digests(specs, ctx)
        on_host = _host_digests(ssh, ctx.targets_dir, _named_files(ctx))
        if not reload_all and _in_step(on_host, ctx, pushed_digests, inputs):
            return outcome  # digests None: what was pushed stays
        try:
            _push(ssh, outcome, specs, ctx, pushed_digests, inputs, on_host, check_only, renew, reload_all)
        except ValidationFailed as exc:
            held_back = _to_hold_back(exc, specs, ctx)
            if not held_back:
                raise
            # One service's rule must not block the others (a bad PromQL expression stored before it was checked
            # at save time, or a promtool stricter than the Prometheus that checked it): push everything else,
            # with the rules of the named services as they are on the host, and fail the pass for them. The
            # inputs are not remembered as pushed, so every pass tries again until the config is fixed.
            outcome.plan, outcome.drift = [], []
            kept = _groups_on_host(ssh, ctx.rules_file, held_back)
            _push(ssh, outcome, specs, ctx, pushed_digests, inputs, on_host, check_only, renew, reload_all, kept=kept)
            if outcome.digests is not None:
                outcome.digests[INPUTS_KEY] = ""
            outcome.held_back = outcome.error_services = held_back
            outcome.error = _(
                "promtool rejected the rules of %(services)s in %(path)s: held back (they stay as they are on the "
                "host until the config is fixed); everything else was pushed:\n%(output)s"
            ) % {"services": ", ".join(sorted(held_back)), "path": exc.path, "output": exc.output}
    except ValidationFailed as exc:
        outcome.error = exc.message
        outcome.error_services = exc.services
    except (IntegrationError, RenderError) as exc:
        outcome.error = str(exc)
    finally:
        outcome.ssh_round_trips = ssh.round_trips
        ssh.close()
    return outcome


def _push(ssh, outcome, specs, ctx, pushed_digests, inputs, on_host, check_only, renew, reload_all, kept=None):
    """Plan the host's files and, unless `check_only`, apply the plan; `kept`: service name -> the rule group to
    keep for it (None: no group)."""
    # A shared file unchanged on the host since the last push, with the same inputs, is neither read nor parsed.
    unchanged = {
        path: digest
        for path, digest in managed_paths(pushed_digests).items()
        if INPUTS_PREFIX + path in inputs
        and pushed_digests.get(INPUTS_PREFIX + path) == inputs[INPUTS_PREFIX + path]
        and on_host is not None
        and on_host.get(path) == digest
    }
    plan, desired_digests = plan_files(ssh, specs, ctx, unchanged=unchanged, kept=kept)
    for change in plan:
        if change.desired is not None and change.current is None and change.current_digest is not None:
            # Only the digest was read (targets): fetch the text for the diff.
            change.current = ssh.read_file(change.path)
        if _hand_made(change, pushed_digests.get(change.path)):
            outcome.drift.append(change.path)
    outcome.plan = plan
    if not check_only:
        if plan:
            outcome.reloads = apply(ssh, plan, ctx, renew)
        for system in ("prometheus", "alertmanager") if reload_all else ():
            if system not in outcome.reloads:
                _reload(ssh, system)
                outcome.reloads.append(system)
        outcome.digests = {**desired_digests, **inputs}


def _to_hold_back(exc, specs, ctx):
    """The services to hold back after a refusal: those promtool named in the services' rule file, when they are
    enabled services of this pass (any other refusal blocks the pass as before)."""
    if exc.path != ctx.rules_file:
        return set()
    return exc.services & {spec.service_name for spec in specs if spec.enabled}


def _groups_on_host(ssh, path, services):
    """service name -> its rule group in the host's rule file (None when it has none there, or the file cannot be
    read as rules)."""
    kept = dict.fromkeys(services)
    try:
        loaded = yaml.safe_load(ssh.read_file(path) or "") or {}
    except yaml.YAMLError:
        return kept
    for group in (loaded.get("groups") or []) if isinstance(loaded, dict) else []:
        name = group.get("name", "") if isinstance(group, dict) else ""
        service = name.removeprefix(rendering.PREFIX)
        if name.startswith(rendering.PREFIX) and service in kept:
            kept[service] = group
    return kept


def managed_paths(pushed_digests):
    """The host's files among the pushed digests (the other keys are Jenkins jobs and inputs)."""
    return {key: value for key, value in pushed_digests.items() if not key.startswith((INPUTS_PREFIX, JOB_PREFIX))}


def _named_files(ctx):
    return [ctx.rules_file, ctx.portal_rules_file, ctx.prometheus_config_file, settings.ALERTMANAGER_CONFIG_FILE]


def _inputs_digests(specs, ctx):
    """The digests of the inputs of the host's files: all of them, prometheus.yml's (the settings) and
    alertmanager.yml's (the settings and the enabled services' names: their routes and receivers)."""
    context = rendering.context_digest(ctx)
    enabled = sorted(spec.service_name for spec in specs if spec.enabled)
    return {
        INPUTS_KEY: rendering.host_inputs_digest(specs, ctx),
        INPUTS_PREFIX + ctx.prometheus_config_file: context,
        INPUTS_PREFIX + settings.ALERTMANAGER_CONFIG_FILE: rendering.digest("\x00".join([context, *enabled])),
    }


def _in_step(on_host, ctx, pushed_digests, inputs):
    """True when the inputs are those of the last push and every managed file on the host (and no other) has the
    digest pushed then: the pass has nothing to do on the host. Any doubt answers False."""
    if on_host is None or not pushed_digests or pushed_digests.get(INPUTS_KEY) != inputs[INPUTS_KEY]:
        return False
    pushed = managed_paths(pushed_digests)
    return all(path in pushed for path in _named_files(ctx)) and on_host == pushed


def _host_digests(ssh, directory, paths):
    """path -> sha256 of each of `paths` that exists and of each *.json and *.tmp file of `directory`, with one
    command on the host; None when the answer is not complete."""
    result = ssh.run(["sh", "-c", _DIGESTS_SCRIPT, "sh", directory, *paths], timeout=60)
    lines = result.stdout.splitlines()
    if not lines or lines[-1] != _DIGESTS_END:
        return None
    digests = {}
    for line in lines[:-1]:
        value, _sep, path = line.partition("  ")
        if len(value) != 64 or not path:
            return None  # a name sha256sum had to escape: let the full comparison handle it
        digests[path] = value
    return digests


def _hand_made(change, pushed_digest):
    """Drift: the portal's wish is what it pushed last time, yet the host differs (or holds a file the portal never
    pushed): someone changed the host by hand."""
    if change.desired is None:
        return pushed_digest is None and not change.path.endswith(".tmp")
    return pushed_digest is not None and rendering.digest(change.desired) == pushed_digest


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


def plan_files(ssh, specs, ctx, *, unchanged=None, kept=None):
    """The files that differ between the host and the desired state (empty when the host is in step).

    `unchanged`: path -> digest of the shared files known to be in step (not read); `kept`: service name -> the
    rule group written for it instead of its rendering. Also returns every managed file's desired digest
    (path -> digest), to remember what was pushed.
    """
    unchanged = unchanged or {}
    enabled = [spec for spec in specs if spec.enabled]
    plan = []
    if ctx.portal_rules_file == ctx.rules_file:
        raise RenderError(
            _("PORTAL_RULES_FILE must not be PROMETHEUS_RULES_FILE (%(path)s): each needs a file of its own.")
            % {"path": ctx.rules_file}
        )
    desired_digests = {}
    # The services' rules and the portal's own (its alerts about itself): two files, both the portal's alone.
    for path, rules_desired in (
        (ctx.rules_file, rendering.rules_text(specs, ctx, kept=kept)),
        (ctx.portal_rules_file, rendering.portal_rules_text(ctx)),
    ):
        rules_current = ssh.read_file(path)
        if rules_current != rules_desired:
            plan.append(FileChange(path, "rules", rules_current, rules_desired))
        desired_digests[path] = rendering.digest(rules_desired)
    am_path = settings.ALERTMANAGER_CONFIG_FILE
    shared = (
        (
            ctx.prometheus_config_file,
            "prometheus_config",
            lambda current: rendering.prometheus_config_text(current, ctx),
        ),
        (
            am_path,
            "alertmanager_config",
            lambda current: rendering.alertmanager_config_text(current, specs, ctx, am_path),
        ),
    )
    for path, kind, render in shared:
        if path in unchanged:
            desired_digests[path] = unchanged[path]
            continue
        current = ssh.read_file(path)
        if current is None:
            raise RenderError(_("%(path)s does not exist on the monitoring host.") % {"path": path})
        desired = render(current)
        if desired != current:
            plan.append(FileChange(path, kind, current, desired))
        desired_digests[path] = rendering.digest(desired)

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
    desired_digests.update((path, rendering.digest(text)) for path, text in desired_targets.items())
    return plan, desired_digests


def apply(ssh, plan, ctx, renew):
    """Validate, swap and reload. Raises ValidationFailed or IntegrationError; the host is then as before."""
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
            ssh.write_file(change.path + ".tmp", change.desired, like=change.path)
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
            fault_point("provisioning.files_swapped")
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
            # NAME.tmp takes the live file's mode and owner before it replaces it (alertmanager.yml holds a token).
            ssh.write_file(change.path + ".tmp", change.desired, like=change.path)
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
                ssh.write_file(change.path + ".tmp", change.current, like=change.path)
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
    raise ValidationFailed(
        _("%(tool)s rejected %(path)s; nothing was changed on the host:\n%(output)s")
        % {"tool": what, "path": path, "output": output},
        services,
        path,
        output,
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
