from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class VMTemplate(models.Model):
    """A vCenter template the portal knows, made from a VM by the portal or imported by a sync."""

    class Status(models.TextChoices):
        CONVERTING = "converting", _("Converting")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")
        MISSING = "missing", _("Missing in vCenter")

    class Method(models.TextChoices):
        MARK = "mark", _("Mark the VM as a template")
        CLONE = "clone", _("Clone the VM into a new template")

    name = models.CharField(_("name"), max_length=80, unique=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.CONVERTING)
    method = models.CharField(_("conversion method"), max_length=8, choices=Method.choices, default=Method.MARK)
    power_off_allowed = models.BooleanField(
        _("power off allowed"), default=False, help_text=_("Allow the portal to power the source VM off first.")
    )
    source_vm_name = models.CharField(_("source VM"), max_length=80, blank=True)
    source_vm_moid = models.CharField(_("source VM id"), max_length=64, blank=True)
    vcenter_moid = models.CharField(_("vCenter managed object id"), max_length=64, blank=True)
    vcenter_uuid = models.CharField(_("vCenter instance UUID"), max_length=64, blank=True)
    datacenter = models.CharField(_("datacenter"), max_length=80, blank=True)
    cluster = models.CharField(_("cluster"), max_length=200, blank=True)
    datastore = models.CharField(_("datastore"), max_length=200, blank=True)
    folder = models.CharField(_("folder"), max_length=400, blank=True)
    guest_os = models.CharField(_("guest OS"), max_length=120, blank=True)
    num_cpus = models.PositiveIntegerField(_("CPUs"), null=True, blank=True)
    memory_mb = models.PositiveIntegerField(_("memory (MB)"), null=True, blank=True)
    disk_gb = models.FloatField(_("disk (GB)"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    notes = models.TextField(_("notes"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    synced_at = models.DateTimeField(_("last synced"), null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("VM template")
        verbose_name_plural = _("VM templates")
        permissions = [
            ("sync_vmtemplate", _("Can sync templates from vCenter")),
            ("delete_in_vcenter_vmtemplate", _("Can delete templates in vCenter")),
        ]

    def __str__(self):
        return self.name

    @property
    def is_ready(self):
        return self.status == self.Status.READY
