"""The inventory: one ManagedInstance per VM of a service, whether the portal created it or adopted it.

A row exists before its VM does (the pipeline records it before the clone starts), so a crash mid-clone leaves a
record that the reconcile and the orphan sweep can act on. Every state change goes through
`fleet.services.instance_transition`, which applies `INSTANCE_TRANSITIONS` and writes an InstanceChange.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ManagedInstance(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROVISIONING = "provisioning", _("Provisioning")
        IN_SERVICE = "in_service", _("In service")
        DRAINING = "draining", _("Draining")
        REMOVING = "removing", _("Removing")
        REMOVED = "removed", _("Removed")
        FAILED = "failed", _("Failed")
        LOST = "lost", _("Lost")

    class Origin(models.TextChoices):
        CREATED = "created", _("Created by the portal")
        ADOPTED = "adopted", _("Adopted")

    class Health(models.TextChoices):
        UNKNOWN = "unknown", _("Unknown")
        HEALTHY = "healthy", _("Healthy")
        UNHEALTHY = "unhealthy", _("Unhealthy")

    # Being created: counted toward max from the moment the row exists.
    CREATING_STATES = (State.PENDING, State.PROVISIONING)
    # What a service runs now, as min and max count it: in service plus being created.
    COUNTED_STATES = (State.PENDING, State.PROVISIONING, State.IN_SERVICE)
    # Still a VM somewhere (or about to be): what the reconcile compares with vCenter and F5.
    LIVE_STATES = (State.PENDING, State.PROVISIONING, State.IN_SERVICE, State.DRAINING, State.REMOVING)
    FINAL_STATES = (State.REMOVED,)

    config = models.ForeignKey(
        "autoscaling.AutoscalingConfig", verbose_name=_("config"), on_delete=models.PROTECT, related_name="instances"
    )
    origin = models.CharField(_("origin"), max_length=8, choices=Origin.choices, default=Origin.CREATED)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.PENDING)
    vm_name = models.CharField(_("VM name"), max_length=80, blank=True)
    vcenter_uuid = models.CharField(_("vCenter instance UUID"), max_length=64, blank=True, db_index=True)
    ip_address = models.GenericIPAddressField(_("IP address"), protocol="IPv4", null=True, blank=True)
    ip_allocation = models.ForeignKey(
        "autoscaling.IpAllocation",
        verbose_name=_("IP allocation"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="instances",
    )
    # Where Prometheus scrapes the VM (host:port); empty: the allocation's address on the node exporter port.
    monitor_target = models.CharField(_("scrape target"), max_length=255, blank=True)
    f5_member = models.CharField(_("F5 member"), max_length=80, blank=True, help_text=_("address:port in the pool"))
    template = models.ForeignKey(
        "templates_app.VMTemplate",
        verbose_name=_("template"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="instances",
    )
    health = models.CharField(_("health"), max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    health_reason = models.CharField(_("health reason"), max_length=500, blank=True)
    unhealthy_since = models.DateTimeField(_("unhealthy since"), null=True, blank=True)
    # When the reconcile first saw the VM powered off, its heartbeat red or its F5 member down: it becomes
    # unhealthy once that has lasted FLEET_UNHEALTHY_GRACE seconds. Cleared when every check passes.
    trouble_since = models.DateTimeField(_("trouble seen since"), null=True, blank=True)
    power_state = models.CharField(_("power state"), max_length=24, blank=True)
    guest_heartbeat = models.CharField(_("guest heartbeat"), max_length=16, blank=True)
    f5_state = models.CharField(_("F5 member state"), max_length=32, blank=True)
    # What a removal that failed after its VM was destroyed left behind ("IP 10.0.0.5 still allocated; ..."), for
    # the orphan sweep; empty when nothing is left.
    leftover = models.CharField(_("left behind"), max_length=500, blank=True)
    protected_from_scale_in = models.BooleanField(
        _("protected from scale-in"),
        default=False,
        help_text=_("A protected instance is never chosen for scale-in. Adopted instances start protected."),
    )
    created_by_event = models.ForeignKey(
        "events.ScaleOutEvent",
        verbose_name=_("created by event"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="instances_created",
    )
    removed_by_event = models.ForeignKey(
        "events.ScaleOutEvent",
        verbose_name=_("removed by event"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="instances_removed",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    in_service_at = models.DateTimeField(_("in service since"), null=True, blank=True)
    removed_at = models.DateTimeField(_("removed at"), null=True, blank=True)
    last_seen_at = models.DateTimeField(_("last seen in vCenter"), null=True, blank=True)

    class Meta:
        ordering = ["config", "created_at", "pk"]
        verbose_name = _("managed instance")
        verbose_name_plural = _("managed instances")
        indexes = [models.Index(fields=["config", "state"], name="instance_config_state")]

    def __str__(self):
        return self.vm_name or self.ip_address or f"#{self.pk}"

    @property
    def is_live(self):
        return self.state in self.LIVE_STATES


class InstanceChange(models.Model):
    """One recorded change of an instance: its state, its health, or an operator's action, with the reason."""

    instance = models.ForeignKey(
        ManagedInstance, verbose_name=_("instance"), on_delete=models.CASCADE, related_name="history"
    )
    at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)
    from_state = models.CharField(_("from state"), max_length=16, choices=ManagedInstance.State.choices, blank=True)
    to_state = models.CharField(_("to state"), max_length=16, choices=ManagedInstance.State.choices, blank=True)
    health = models.CharField(_("health"), max_length=16, choices=ManagedInstance.Health.choices, blank=True)
    reason = models.TextField(_("reason"))
    # Who or what made the change: "reconcile", "pipeline (event #12)", "user alice", ...
    actor = models.CharField(_("by"), max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["instance", "at", "pk"]
        verbose_name = _("instance change")
        verbose_name_plural = _("instance changes")

    def __str__(self):
        return f"{self.instance}: {self.from_state or '-'} -> {self.to_state or '-'}"


class ReconcileRun(models.Model):
    """One pass of the fleet's reconcile: what it compared, what it changed, and the error that stopped it."""

    started_at = models.DateTimeField(_("started at"), db_index=True)
    finished_at = models.DateTimeField(_("finished at"))
    service = models.CharField(_("service"), max_length=48, blank=True, help_text=_("Empty: every service."))
    actor = models.CharField(_("by"), max_length=100, blank=True)
    ok = models.BooleanField(_("completed"), default=True)
    error = models.TextField(_("error"), blank=True)
    instances = models.PositiveIntegerField(_("instances compared"), default=0)
    vms = models.PositiveIntegerField(_("VMs in vCenter"), default=0)
    changes = models.JSONField(_("changes"), default=list, blank=True)
    vcenter_requests = models.PositiveIntegerField(_("vCenter property reads"), default=0)
    f5_requests = models.PositiveIntegerField(_("F5 pool reads"), default=0)

    class Meta:
        ordering = ["-started_at", "-pk"]
        verbose_name = _("fleet reconcile")
        verbose_name_plural = _("fleet reconciles")

    def __str__(self):
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.service or '*'}"
