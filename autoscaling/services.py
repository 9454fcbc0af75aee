"""Autoscaling configs, IP pools and provisioning passes: every decision and every write of the app.

The doors (API, admin, tasks, signals, the management command) call these functions and nothing else.
Provisioning is level-triggered: anything that changes the desired state calls `provisioning_request`, which
queues at most one pass; the pass (`provisioning_run`) renders the state of all configs and pushes only what
differs.
"""

import dataclasses
import logging
import os
import time
import uuid
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from access import audit
from autoscaling import hooks, provisioning, rendering
from autoscaling.models import (
    ACTIVE_STATES,
    AutoscalingConfig,
    IpAllocation,
    IpPool,
    ProvisioningRun,
    ProvisioningState,
)
from autoscaling.provisioning import inputs as provisioning_inputs

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120
RUN_TASK = "autoscaling.tasks.provisioning_run_task"
PERIODIC_TASK = "autoscaling.tasks.provisioning_periodic"
SCHEDULE_NAME = "autoscaling: reconcile monitoring and Jenkins"
HISTORY_KEEP = 2000

CONFIG_FIELDS = [
    "service_name",
    "description",
    "template",
    "enabled",
    "metric",
    "threshold",
    "duration_seconds",
    "promql_expression",
    "min_instances",
    "max_instances",
    "scale_out_step",
    "cooldown_seconds",
    "policy_type",
    "target_value",
    "max_scale_out_step",
    "scale_in_threshold",
    "scale_in_duration_seconds",
    "scale_in_cooldown_seconds",
    "scale_in_step",
    "scale_in_order",
    "drain_timeout_seconds",
    "datacenter",
    "cluster",
    "resource_pool",
    "folder",
    "datastore",
    "network",
    "vm_name_pattern",
    "ip_pool",
    "f5_pool",
    "f5_partition",
    "f5_member_port",
    "monitored_instances",
    "dry_run",
]
POOL_FIELDS = [
    "name",
    "network",
    "first_address",
    "last_address",
    "gateway",
    "dns_servers",
    "excluded_addresses",
    "ping_check",
    "description",
]


class ConflictError(Exception):
    """The request is valid but the current state forbids it (e.g. deleting a pool a config uses)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


# --- configs -----------------------------------------------------------------------------------------------------
def _assign(instance, data, fields):
    unknown = set(data) - set(fields)
    if unknown:
        raise ValidationError({name: [_("Unknown field.")] for name in sorted(unknown)})
    for name, value in data.items():
        setattr(instance, name, value)


def config_create(*, data, user=None):
    """A new config from field values (model instances for template and ip_pool); validated, then saved."""
    config = AutoscalingConfig()
    _assign(config, data, CONFIG_FIELDS)
    config.sync_state = AutoscalingConfig.SyncState.PENDING
    config.full_clean()
    with transaction.atomic():
        config.save()
        _instances_adopt(config, user)
    logger.info("autoscaling config %s created by %s", config.service_name, user or "system")
    return config


def config_update(*, config, data, user=None):
    """Change some fields of a config; validated as a whole, then saved (which asks for a pass)."""
    if "service_name" in data and data["service_name"] != config.service_name and config.events.exists():
        raise ValidationError({"service_name": [_("The service has scale-out events; its name can no longer change.")]})
    _assign(config, data, CONFIG_FIELDS)
    config.sync_state = AutoscalingConfig.SyncState.PENDING
    config.full_clean()
    with transaction.atomic():
        config.save()
        _instances_adopt(config, user)
    logger.info("autoscaling config %s updated by %s", config.service_name, user or "system")
    return config


def config_errors(*, config=None, data, exclude=()):
    """Field -> messages that the config's validation gives `data` applied to `config` (a new config when None),
    leaving out the fields in `exclude` (already refused by the door); {} when it would save. Saves nothing.

    The API calls this when some fields are refused, so that one answer names every problem of the request."""
    candidate = AutoscalingConfig.objects.get(pk=config.pk) if config is not None else AutoscalingConfig()
    for name, value in data.items():
        if name in CONFIG_FIELDS:
            setattr(candidate, name, value)
    try:
        candidate.full_clean(exclude=[name for name in exclude if name in CONFIG_FIELDS])
    except ValidationError as exc:
        return {name: messages for name, messages in exc.message_dict.items() if name not in exclude}
    return {}


def config_save(*, config, user=None):
    """Save a config the admin's form has already filled in and validated."""
    config.sync_state = AutoscalingConfig.SyncState.PENDING
    config.full_clean()
    with transaction.atomic():
        config.save()
        _instances_adopt(config, user)
    return config


def _instances_adopt(config, user):
    """The config's monitored instances are adopted instances of its fleet (added, or removed when unlisted): the
    fleet app, which sits above this one, receives `config_saved` in this transaction."""
    hooks.config_saved.send(sender=AutoscalingConfig, config=config, user=user)


def config_enable(*, config, user=None):
    with audit.operation("enable"):
        return config_update(config=config, data={"enabled": True}, user=user)


def config_disable(*, config, user=None):
    # Disabling must always work, even when the template went missing since.
    config.enabled = False
    config.sync_state = AutoscalingConfig.SyncState.PENDING
    with audit.operation("disable"), transaction.atomic():
        config.save(update_fields=["enabled", "sync_state", "updated_at"])
    logger.info("autoscaling config %s disabled by %s", config.service_name, user or "system")
    return config


def config_delete(*, config, user=None):
    """Delete a config; its rule, route, targets and Jenkins job go with the next pass."""
    name = config.service_name
    try:
        with transaction.atomic():
            # Locked first, as a decision locks it: a decider's round under way commits the decisions and
            # notifications it points at this config before the deletion collects them (and a later round finds no
            # config: an unknown service).
            list(AutoscalingConfig.objects.select_for_update().filter(pk=config.pk).values_list("pk", flat=True))
            # Its inventory goes with it (a VM the portal created means events, which refuse the deletion and take
            # this back with them).
            config.instances.all().delete()
            config.delete()
    except ProtectedError:
        count = config.events.count()
        raise ConflictError(
            _(
                "The config %(service)s has %(count)d scale-out events, which keep its history; "
                "disable it instead of deleting it."
            )
            % {"service": name, "count": count}
        ) from None
    logger.info("autoscaling config %s deleted by %s", name, user or "system")


def config_previews(*, config):
    """What a pass would push for this config: the rule group, route + receiver, and Jenkins job (secrets masked)."""
    ctx = provisioning_inputs.render_context()
    spec = provisioning_inputs.service_spec(config)
    # The rule and route are shown as they will be once the config is enabled.
    as_enabled = dataclasses.replace(spec, enabled=True)
    return {
        "rule": rendering.preview_rule(as_enabled, ctx),
        "route": rendering.preview_route(as_enabled, ctx),
        "job": rendering.preview_job(spec, ctx),
        "job_name": spec.job_name,
        "digest": rendering.spec_digest(spec, ctx),
    }


# --- IP pools ----------------------------------------------------------------------------------------------------
def ip_pool_create(*, data, user=None):
    pool = IpPool()
    _assign(pool, data, POOL_FIELDS)
    pool.full_clean()
    with transaction.atomic():  # with its audit entry
        pool.save()
    return pool


def ip_pool_update(*, pool, data, user=None):
    _assign(pool, data, POOL_FIELDS)
    return ip_pool_save(pool=pool, user=user)


def ip_pool_save(*, pool, user=None):
    """Validate and save a pool whose fields are set (also refused when allocated addresses fall outside)."""
    pool.full_clean()
    with transaction.atomic():
        pool.save()
        # A ping's skip mark on an address the pool no longer hands out means nothing, and would count as not free.
        stale = [
            a.pk for a in pool.allocations.filter(state=IpAllocation.State.SKIPPED) if not pool.hands_out(a.address)
        ]
        if stale:
            IpAllocation.objects.filter(pk__in=stale).delete()
    return pool


def ip_pool_delete(*, pool, user=None):
    users = list(pool.configs.values_list("service_name", flat=True)[:10])
    if users:
        raise ConflictError(
            _("The IP pool %(pool)s is used by the configs %(configs)s; give them another pool first.")
            % {"pool": pool.name, "configs": ", ".join(users)}
        )
    active = pool.allocations.filter(state__in=ACTIVE_STATES).count()
    if active:
        raise ConflictError(
            _("The IP pool %(pool)s still has %(count)d addresses reserved or in use.")
            % {"pool": pool.name, "count": active}
        )
    with transaction.atomic():
        pool.delete()


def ip_pool_usage(*, pool):
    """Size (the usable addresses) and counts of a pool: reserved, in use, used (both), skipped and free.

    Free of queries for a pool from `IpPool.objects.with_counts()` (lists); one query otherwise.
    """
    if not hasattr(pool, "used_count"):
        pool = IpPool.objects.with_counts().get(pk=pool.pk)
    return pool.usage


# --- provisioning ------------------------------------------------------------------------------------------------
def provisioning_request(*, reason, user=None, full_check=False):
    """Ask for a pass. At most one pass waits in the queue: a request while one waits joins it (returns None).

    `full_check` (for "sync now") also reads back every Jenkins job to find hand edits.
    """
    waiting = ProvisioningRun.objects.filter(status=ProvisioningRun.Status.QUEUED, check_only=False)
    if waiting.exists():
        if full_check:
            waiting.update(full_check=True)
        return None
    run = ProvisioningRun.objects.create(
        reason=_truncate(f"{reason}" + (f" ({user})" if user else ""), 200), full_check=full_check
    )
    transaction.on_commit(lambda: _enqueue(run.pk))
    # The reason says what asked for it (a config saved by whom, the schedule, a command, the demo).
    logger.info("provisioning pass %s queued: %s", run.pk, run.reason)
    return run


def provisioning_sync(*, reason, user=None):
    """An operator's "sync now": a full pass (joined with one already waiting), recorded in the audit trail.
    Returns (queued, run): whether a new pass was queued, and the pass that will run (None if it already started)."""
    with transaction.atomic():
        run = provisioning_request(reason=reason, user=user, full_check=True)
        queued = run is not None
        if run is None:
            run = ProvisioningRun.objects.filter(status=ProvisioningRun.Status.QUEUED, check_only=False).first()
        audit.operator_action(
            name="sync", instance=run, model=ProvisioningRun, label=reason, user=user, details={"queued": queued}
        )
    return queued, run


def _enqueue(run_id):
    from django_q.tasks import async_task

    async_task(RUN_TASK, run_id, task_name=f"provisioning-run-{run_id}", group="autoscaling")


def provisioning_request_on_commit(*, reason):
    """For signals: ask for a pass once the current transaction commits (no I/O now)."""
    transaction.on_commit(lambda: provisioning_request(reason=reason))


def _truncate(text, length):
    return text if len(text) <= length else text[: length - 1] + "…"


def _state():
    try:
        state, _created = ProvisioningState.objects.get_or_create(pk=1)
    except IntegrityError:
        state = ProvisioningState.objects.get(pk=1)
    return state


def _process_space():
    """Names the PID space this process lives in (the machine's boot and the PID namespace): a PID read in a lease
    can be checked only by a process of the same space."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()[:8]
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "?"
    return f"{boot_id}.{namespace}"


def _lease_owner():
    """This pass's name in the lease: its PID space and process, so that a pass killed in flight is recognised."""
    return f"{_process_space()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _lease_holder_dead(holder):
    """True when the lease is held by a process of this PID space that no longer runs (killed in its pass)."""
    space, _sep, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if space == "?" or space != _process_space() or not pid.isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False


def _lease_acquire(owner, wait):
    _state()
    deadline = time.monotonic() + wait
    while True:
        now = timezone.now()
        expires = now + timedelta(seconds=LEASE_SECONDS)
        taken = (
            ProvisioningState.objects.filter(pk=1)
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
            .update(lease_owner=owner, lease_expires_at=expires)
        )
        if taken:
            return True
        # A pass killed in flight holds the lease until it expires; on its own host it is taken over at once.
        holder = ProvisioningState.objects.filter(pk=1).values_list("lease_owner", flat=True).first() or ""
        if _lease_holder_dead(holder) and ProvisioningState.objects.filter(pk=1, lease_owner=holder).update(
            lease_owner=owner, lease_expires_at=expires
        ):
            logger.warning("provisioning: the pass holding the lease (%s) no longer runs; taken over", holder)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _lease_renew(owner):
    ProvisioningState.objects.filter(pk=1, lease_owner=owner).update(
        lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS)
    )


def _lease_release(owner):
    ProvisioningState.objects.filter(pk=1, lease_owner=owner).update(lease_owner="", lease_expires_at=None)


def provisioning_run(*, run_id=None, reason="", check_only=False, full_check=True, wait=60.0):
    """Run one pass (or, with check_only, only compare). Returns the ProvisioningRun that records it.

    Only one pass runs at a time across all workers (a lease on the ProvisioningState row). A queued run that
    another pass has already taken up is returned as it is.
    """
    owner = _lease_owner()
    if not _lease_acquire(owner, wait):
        message = _("Another provisioning pass is still running; this one stays queued.")
        if run_id:
            return ProvisioningRun.objects.get(pk=run_id)
        return ProvisioningRun(status=ProvisioningRun.Status.QUEUED, reason=reason, error=message)
    try:
        if run_id:
            run = ProvisioningRun.objects.filter(pk=run_id).first()
            if run is None or run.status != ProvisioningRun.Status.QUEUED:
                return run
        else:
            run = ProvisioningRun(reason=_truncate(reason, 200), check_only=check_only, full_check=full_check)
        run.status = ProvisioningRun.Status.RUNNING
        run.started_at = timezone.now()
        if not check_only:
            # Every waiting request is served by this pass: it reads the database after this point.
            waiting = ProvisioningRun.objects.filter(status=ProvisioningRun.Status.QUEUED, check_only=False).exclude(
                pk=run.pk
            )
            run.full_check = run.full_check or waiting.filter(full_check=True).exists()
            run.save()
            waiting.update(status=ProvisioningRun.Status.MERGED, merged_into=run, finished_at=run.started_at)
        else:
            run.save()
        interrupted = _interrupted_runs_finish(run) if not check_only else 0
        # A pass run by a command (sync_autoscaling) is an operator's; the task's passes record nothing here.
        audit.operator_action(name="check" if check_only else "sync", instance=run)
        snapshot_at = timezone.now()
        specs = provisioning_inputs.service_specs()
        state = _state()
        try:
            result = provisioning.reconcile(
                specs=specs,
                pushed_digests=state.pushed_digests or {},
                managed_jobs=state.managed_jobs or [],
                check_only=check_only,
                full_check=run.full_check,
                renew=lambda: _lease_renew(owner),
                reload_all=bool(interrupted),
            )
        except Exception as exc:  # a bug must still leave a record and release the lease
            logger.exception("provisioning pass %s crashed", run.pk)
            run.status = ProvisioningRun.Status.FAILED
            run.error = _("The pass stopped unexpectedly: %(error)s") % {"error": exc}
            run.finished_at = timezone.now()
            run.save()
            return run
        _record(run, state, result, specs, snapshot_at, check_only)
        return run
    finally:
        _lease_release(owner)


def _interrupted_runs_finish(run):
    """Record as failed the passes left running by a process that died in them (this pass holds the lease, so no
    other runs), and return how many. This pass serves their requests; as one may have died between swapping files
    in and reloading, it reloads Prometheus and Alertmanager even where the files already match."""
    left = ProvisioningRun.objects.filter(status=ProvisioningRun.Status.RUNNING).exclude(pk=run.pk)
    message = _("Interrupted: the process running this pass stopped before it finished; pass %(run)d took over.") % {
        "run": run.pk
    }
    count = left.update(status=ProvisioningRun.Status.FAILED, error=message, finished_at=timezone.now())
    if count:
        logger.warning("provisioning pass %s: %d interrupted pass(es) found; reloading to be sure", run.pk, count)
    return count


def _record(run, state, result, specs, snapshot_at, check_only):
    now = timezone.now()
    errors = []
    if result.host_error:
        errors.append(result.host_error)
    for name, message in sorted(result.jenkins_errors.items()):
        errors.append(f"{name}: {message}")
    run.changed_files = result.changed_files
    run.jenkins_changes = result.jenkins_changes
    run.drift = result.drift
    run.reloads = result.reloads
    run.ssh_round_trips = result.ssh_round_trips
    run.diff = result.diff
    run.unmanaged_diff = result.unmanaged_diff
    run.error = "\n".join(errors)
    run.finished_at = now
    if result.failed:
        run.status = ProvisioningRun.Status.FAILED
    elif check_only:
        run.status = ProvisioningRun.Status.DIFFERS if result.differs else ProvisioningRun.Status.UNCHANGED
    else:
        run.status = ProvisioningRun.Status.CHANGED if result.differs else ProvisioningRun.Status.UNCHANGED
    run.save()
    if result.drift:
        logger.warning("provisioning: the host or Jenkins was changed by hand: %s", ", ".join(result.drift))
    if check_only:
        return
    state.pushed_digests = result.pushed_digests
    state.managed_jobs = result.managed_jobs
    state.last_pass_at = now
    state.last_status = run.status
    state.last_error = run.error
    state.save(update_fields=["pushed_digests", "managed_jobs", "last_pass_at", "last_status", "last_error"])
    _record_configs(result, specs, snapshot_at, now)
    _trim_history()


def _record_configs(result, specs, snapshot_at, now):
    ctx = provisioning_inputs.render_context()
    current = {
        c["service_name"]: c
        for c in AutoscalingConfig.objects.values("id", "service_name", "sync_state", "synced_digest", "sync_error")
    }
    digests = rendering.spec_digests(specs, ctx)
    for spec in specs:
        config = current.get(spec.service_name)
        if config is None:
            continue
        spec_digest = digests[spec.service_name]
        error = _config_error(result, spec, spec_digest != config["synced_digest"])
        if error:
            changes = {"sync_state": AutoscalingConfig.SyncState.ERROR, "sync_error": error}
        else:
            changes = {"sync_state": AutoscalingConfig.SyncState.SYNCED, "sync_error": ""}
            if spec_digest != config["synced_digest"]:
                changes.update(synced_digest=spec_digest, synced_at=now)
        if all(config.get(k) == v for k, v in changes.items()):
            continue
        # A config saved while this pass ran waits for the next pass: do not call it synced.
        AutoscalingConfig.objects.filter(pk=config["id"], updated_at__lte=snapshot_at).update(**changes)


def _config_error(result, spec, has_changes):
    messages = []
    if result.host_error:
        if not result.host_error_services or spec.service_name in result.host_error_services:
            messages.append(result.host_error)
        elif has_changes and not result.held_back:  # held back: the others were pushed
            messages.append(
                _("Not pushed: the host rejected the files because of %(services)s (see there).")
                % {"services": ", ".join(sorted(result.host_error_services))}
            )
    if spec.service_name in result.jenkins_errors:
        messages.append(_("Jenkins: %(error)s") % {"error": result.jenkins_errors[spec.service_name]})
    return "\n".join(messages)


def _trim_history():
    stale = ProvisioningRun.objects.order_by("-id").values_list("id", flat=True)[HISTORY_KEEP : HISTORY_KEEP + 1]
    if stale:
        ProvisioningRun.objects.filter(id__lte=stale[0]).exclude(status=ProvisioningRun.Status.QUEUED).delete()


def provisioning_schedule_ensure():
    """Create (or repair) the periodic pass that retries failures and reports and repairs drift. Idempotent."""
    from django_q.models import Schedule

    schedules = Schedule.objects.filter(name=SCHEDULE_NAME).order_by("id")
    first = schedules.first()
    if first is None:
        Schedule.objects.create(
            name=SCHEDULE_NAME,
            func=PERIODIC_TASK,
            schedule_type=Schedule.MINUTES,
            minutes=1,
            repeats=-1,
        )
        return
    schedules.exclude(pk=first.pk).delete()
    if first.func != PERIODIC_TASK or first.schedule_type != Schedule.MINUTES or first.repeats != -1:
        first.func = PERIODIC_TASK
        first.schedule_type = Schedule.MINUTES
        first.minutes = first.minutes or 1
        first.repeats = -1
        first.save()
