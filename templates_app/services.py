"""VM templates: create from a vCenter VM, convert in the background, delete, sync with vCenter.

Every write to VMTemplate happens here. vCenter is reached through `common.clients.vcenter_client()`;
its failures arrive as IntegrationError: the doors show them (the API as 502), conversions record them on the row.
"""

import logging
import os
import time
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from access import audit
from common.clients import vcenter_client
from integrations.errors import IntegrationError
from integrations.vcenter import POWERED_OFF
from templates_app.models import VMTemplate

logger = logging.getLogger(__name__)

CONVERT_TASK = "templates_app.tasks.template_convert"


class TemplateInUseError(Exception):
    """The template is referenced by autoscaling configs and cannot be deleted."""

    def __init__(self, message, configs):
        super().__init__(message)
        self.message = message
        self.configs = configs


class TemplateBusyError(Exception):
    """The template is being converted; the operation must wait."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: reason"

    def summary(self):
        return _("%(created)d imported, %(updated)d refreshed, %(missing)d missing, %(skipped)d skipped") % {
            "created": len(self.created),
            "updated": len(self.updated),
            "missing": len(self.missing),
            "skipped": len(self.skipped),
        }


# --- selectors -------------------------------------------------------------------------------------------------
def vcenter_vms_list(*, name=None, power_state=None, include_templates=False):
    """VMs in vCenter (VirtualMachineInfo), filtered: name contains `name` (any case), exact power state."""
    with vcenter_client() as client:
        vms = client.list_vms()
    needle = (name or "").casefold()
    return [
        vm
        for vm in vms
        if (include_templates or not vm.is_template)
        and (not needle or needle in vm.name.casefold())
        and (not power_state or vm.power_state == power_state)
    ]


# --- create and convert ----------------------------------------------------------------------------------------
def _validate_name(name):
    if not name:
        return _("Give the template a name.")
    if len(name) > VMTemplate._meta.get_field("name").max_length:
        return _("Use at most 80 characters.")
    if "/" in name or "\\" in name or "%" in name:
        return _("The name must not contain '/', '\\' or '%'.")
    return None


def template_create(
    *, source_vm, name="", method=VMTemplate.Method.MARK, power_off_allowed=False, notes="", user=None, queue=True
):
    """Validate, create the template row (status converting) and queue its conversion (`queue=False`: the caller
    runs `template_convert` itself, and no task of a running cluster converts it at the same time).

    `source_vm` is the name of a vCenter VM; `name` (default: the VM's name, or "<VM>-template" for a clone)
    becomes the template's name in the portal and in vCenter (the mark method renames the VM when they differ).
    Raises ValidationError (by field) for bad input, IntegrationError when vCenter cannot be asked.
    """
    source_vm = (source_vm or "").strip()
    name = (name or "").strip()
    if not name and source_vm:
        name = f"{source_vm}-template" if method == VMTemplate.Method.CLONE else source_vm
    errors = {}
    if not source_vm:
        errors["source_vm"] = _("Choose the vCenter VM to turn into a template.")
    if method not in VMTemplate.Method.values:
        errors["method"] = _("Choose one of: %(choices)s.") % {"choices": ", ".join(VMTemplate.Method.values)}
    name_error = _validate_name(name)
    if name_error:
        errors["name"] = name_error
    elif VMTemplate.objects.filter(name=name).exists():
        errors["name"] = _("A template named %(name)s already exists in the portal.") % {"name": name}
    if errors:
        raise ValidationError(errors)

    with vcenter_client() as client:
        source = client.find_vm(source_vm)
        if source is None:
            raise ValidationError({"source_vm": _("There is no VM named %(name)s in vCenter.") % {"name": source_vm}})
        if source.is_template:
            raise ValidationError(
                {
                    "source_vm": _("%(name)s is already a template in vCenter: use “sync from vCenter” to import it.")
                    % {"name": source_vm}
                }
            )
        if method == VMTemplate.Method.MARK and source.power_state != POWERED_OFF and not power_off_allowed:
            raise ValidationError(
                {
                    "power_off_allowed": _(
                        "VM %(name)s is %(state)s: allow the portal to power it off, or choose the clone method, "
                        "which leaves it running."
                    )
                    % {"name": source_vm, "state": source.power_state}
                }
            )
        if method == VMTemplate.Method.CLONE and name == source.name:
            raise ValidationError({"name": _("The cloned template needs a name other than its source VM's.")})
        if name != source.name and client.name_taken(name):
            raise ValidationError({"name": _("vCenter already has a VM or template named %(name)s.") % {"name": name}})

    template = VMTemplate(
        name=name,
        status=VMTemplate.Status.CONVERTING,
        method=method,
        power_off_allowed=bool(power_off_allowed),
        source_vm_name=source.name,
        source_vm_moid=source.moid,
        notes=notes or "",
        created_by=user if user is not None and user.is_authenticated else None,
    )
    _apply_facts(template, source, identity=False)
    template.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            template.save()
            if queue:
                transaction.on_commit(lambda: _queue_conversion(template.pk))
    except IntegrityError:
        raise ValidationError(
            {"name": _("A template named %(name)s already exists in the portal.") % {"name": name}}
        ) from None
    logger.info(
        "template %s: conversion of VM %s (%s) %s by %s",
        name,
        source.name,
        method,
        "queued" if queue else "started",
        _by(user),
    )
    return template


def _by(user):
    """Who did it, for the log: a user's name, or "system" for a command, a task or the demo (like autoscaling's)."""
    if user is not None and user.is_authenticated:
        return user.get_username()
    return "system"


def _queue_conversion(template_id):
    async_task(CONVERT_TASK, template_id, task_name=f"template-convert-{template_id}", group="templates")


CONVERT_LOCK = "template-convert-lock-"
CONVERT_LOCK_SECONDS = 330  # beyond the task's timeout (300 s), below its re-delivery (retry 360 s)


def template_convert(*, template_id):
    """Turn the template's source VM into a vCenter template; record ready or failed (with the reason) on the row.

    Safe to run twice: a row that is no longer converting is left alone, and a conversion that already happened
    in vCenter (the VM is a template / the clone exists) is adopted instead of repeated.
    """
    template = VMTemplate.objects.filter(pk=template_id).first()
    if template is None or template.status != VMTemplate.Status.CONVERTING:
        return template
    # One conversion at a time: the queued task and a direct call (the demo's seed while a task cluster runs) would
    # both find the row converting and both clone (vCenter takes a second VM of the same name). The other one
    # records the result; the caller waits for the row (`template_wait`).
    lock = f"{CONVERT_LOCK}{template_id}"
    if not cache.add(lock, os.getpid(), CONVERT_LOCK_SECONDS):
        return template
    try:
        template.refresh_from_db()
        if template.status != VMTemplate.Status.CONVERTING:  # the other one finished just before
            return template
        return _template_convert(template)
    finally:
        cache.delete(lock)


def template_wait(*, template_id, timeout=120.0):
    """The template once it is no longer converting (or as it is after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    template = VMTemplate.objects.get(pk=template_id)
    while template.status == VMTemplate.Status.CONVERTING and time.monotonic() < deadline:
        time.sleep(0.2)
        template.refresh_from_db()
    return template


def _template_convert(template):
    try:
        with vcenter_client() as client:
            result = _convert(client, template)
    except IntegrationError as exc:
        message = exc.message if exc.permanent else _("%(error)s Retrying may help.") % {"error": exc.message}
        logger.warning("template %s: conversion failed: %s", template.name, exc.message)
        _finish(template, status=VMTemplate.Status.FAILED, error=message)
        return template
    except Exception as exc:
        _finish(
            template,
            status=VMTemplate.Status.FAILED,
            error=_("Unexpected error: %(error)s") % {"error": f"{exc.__class__.__name__}: {exc}"},
        )
        raise
    _apply_facts(template, result)
    _finish(template, status=VMTemplate.Status.READY, error="", facts=True)
    logger.info("template %s: ready (%s)", template.name, result.moid)
    return template


def _convert(client, template):
    if template.method == VMTemplate.Method.CLONE:
        existing = client.find_vm(template.name)
        if existing is not None and existing.is_template:
            return existing  # an earlier run cloned it but could not record it
        return client.clone_to_template(template.source_vm_moid, name=template.name)
    vm = client.get_vm(template.source_vm_moid)
    if not vm.is_template:  # else an earlier run marked it
        vm = client.mark_as_template(vm.moid, power_off=template.power_off_allowed)
    # Renamed only once marked: a refused conversion leaves the operator's VM as it was.
    if vm.name != template.name:
        vm = client.rename_vm(vm.moid, name=template.name)
    return vm


def _finish(template, *, status, error, facts=False):
    template.status = status
    template.last_error = error
    fields = ["status", "last_error", "updated_at"]
    if facts:
        template.synced_at = timezone.now()
        fields += [*FACT_FIELDS, "synced_at"]
    # Only a row still converting is finished: a concurrent delete or second run leaves it alone.
    with transaction.atomic():
        finished = VMTemplate.objects.filter(pk=template.pk, status=VMTemplate.Status.CONVERTING).update(
            **{name: getattr(template, name) for name in fields if name != "updated_at"}, updated_at=timezone.now()
        )
        if finished:  # a conversion starts with no error (created, or retried)
            changes = {"status": (VMTemplate.Status.CONVERTING, status), "last_error": ("", error)}
            audit.change_record(instance=template, changes={k: v for k, v in changes.items() if v[0] != v[1]})


FACT_FIELDS = [
    "vcenter_moid",
    "vcenter_uuid",
    "datacenter",
    "cluster",
    "datastore",
    "folder",
    "guest_os",
    "num_cpus",
    "memory_mb",
    "disk_gb",
]


def _apply_facts(template, vm, *, identity=True):
    if identity:
        template.vcenter_moid = vm.moid
        template.vcenter_uuid = vm.instance_uuid
    template.datacenter = vm.datacenter
    template.cluster = vm.cluster or vm.host
    template.datastore = vm.datastore
    template.folder = vm.folder
    template.guest_os = vm.guest_os
    template.num_cpus = vm.num_cpus
    template.memory_mb = vm.memory_mb
    template.disk_gb = vm.disk_gb


def template_retry(*, template, user=None):
    """Queue a failed conversion again."""
    if template.status != VMTemplate.Status.FAILED or not template.source_vm_moid:
        raise ValidationError(_("Only a failed conversion of a vCenter VM can be retried."))
    with transaction.atomic():
        updated = VMTemplate.objects.filter(pk=template.pk, status=VMTemplate.Status.FAILED).update(
            status=VMTemplate.Status.CONVERTING, last_error="", updated_at=timezone.now()
        )
        if updated:
            transaction.on_commit(lambda: _queue_conversion(template.pk))
            audit.change_record(
                instance=template, changes={"status": (template.status, VMTemplate.Status.CONVERTING)}, user=user,
                name="retry",
            )  # fmt: skip
    template.refresh_from_db()
    logger.info("template %s: conversion retried by %s", template.name, _by(user))
    return template


# --- delete ----------------------------------------------------------------------------------------------------
def template_delete(*, template, delete_in_vcenter=False, user=None):
    """Delete the template from the portal and, when asked, from vCenter. Refused while a config uses it."""
    configs = sorted(template.configs.values_list("service_name", flat=True))
    if configs:
        raise _in_use(template, configs)
    if template.status == VMTemplate.Status.CONVERTING:
        raise TemplateBusyError(
            _("Template %(name)s is still being converted: wait until it is ready or failed.") % {"name": template.name}
        )
    if delete_in_vcenter and template.vcenter_moid and template.status != VMTemplate.Status.MISSING:
        with vcenter_client() as client:
            try:
                vm = client.get_vm(template.vcenter_moid)
            except IntegrationError as exc:
                if exc.code != "not_found":
                    raise
                vm = None
            # The id may have been reused after the template vanished: only delete what is still this template.
            if vm is not None and (not template.vcenter_uuid or vm.instance_uuid == template.vcenter_uuid):
                client.delete_template(vm.moid)
    try:
        with audit.operation("delete_in_vcenter" if delete_in_vcenter else ""), transaction.atomic():
            template.delete()
    except ProtectedError as exc:
        raise _in_use(template, sorted(str(obj) for obj in exc.protected_objects)) from None
    logger.info("template %s deleted by %s (in vCenter: %s)", template.name, _by(user), delete_in_vcenter)


def _in_use(template, configs):
    message = _(
        "Template %(name)s is used by the autoscaling config(s) %(configs)s: point them at another template first."
    ) % {"name": template.name, "configs": ", ".join(configs)}
    return TemplateInUseError(message, configs)


# --- sync ------------------------------------------------------------------------------------------------------
def templates_sync(*, user=None):
    """Import templates that exist in vCenter, refresh the facts of known ones, mark vanished ones missing.

    Rows still converting are left to their task. A template is recognised by its instance UUID (then by its
    managed object id); a vCenter template whose name a different row already has is skipped and reported.
    """
    with vcenter_client() as client:
        found = client.list_templates()
    now = timezone.now()
    result = SyncResult()
    with audit.operation("sync"), transaction.atomic():
        rows = list(VMTemplate.objects.select_for_update().exclude(status=VMTemplate.Status.CONVERTING))
        by_uuid = {row.vcenter_uuid: row for row in rows if row.vcenter_uuid}
        by_moid = {row.vcenter_moid: row for row in rows if row.vcenter_moid and not row.vcenter_uuid}
        names = set(VMTemplate.objects.values_list("name", flat=True))
        seen = set()
        for vm in found:
            row = by_uuid.get(vm.instance_uuid) or by_moid.get(vm.moid)
            if row is None:
                if vm.name in names:
                    result.skipped.append(_("%(name)s: another portal template has this name") % {"name": vm.name})
                    continue
                row = VMTemplate(
                    name=vm.name[:80],
                    status=VMTemplate.Status.READY,
                    source_vm_name="",
                    notes=_("Imported from vCenter."),
                    created_by=user if user is not None and user.is_authenticated else None,
                )
                _apply_facts(row, vm)
                row.synced_at = now
                row.save()
                names.add(row.name)
                result.created.append(row.name)
                seen.add(row.pk)
                continue
            seen.add(row.pk)
            _apply_facts(row, vm)
            row.status = VMTemplate.Status.READY
            if row.last_error.startswith(MISSING_PREFIX):
                row.last_error = ""
            row.synced_at = now
            row.save()
            result.updated.append(row.name)
        for row in rows:
            if row.pk in seen or row.status not in (VMTemplate.Status.READY, VMTemplate.Status.MISSING):
                continue
            if row.status != VMTemplate.Status.MISSING:
                row.status = VMTemplate.Status.MISSING
                row.last_error = f"{MISSING_PREFIX} {now:%Y-%m-%d %H:%M} UTC."
            row.synced_at = now
            row.save(update_fields=["status", "last_error", "synced_at", "updated_at"])
            result.missing.append(row.name)
        details = {"summary": result.summary()}
        audit.operator_action(name="sync", model=VMTemplate, label="templates from vCenter", user=user, details=details)
    logger.info("templates synced by %s: %s", _by(user), result.summary())
    return result


# Not translated: it is stored, and sync recognises its own note by it.
MISSING_PREFIX = "Not found among vCenter's templates at the sync of"
