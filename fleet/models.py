"""The inventory: one ManagedInstance per VM of a service, whether the portal created it or adopted it.

A row exists before its VM does (the pipeline records it before the clone starts), so a crash mid-clone leaves a
record that the reconcile and the orphan sweep can act on. Every state change goes through
`fleet.services.instance_transition`, which applies `INSTANCE_TRANSITIONS` and writes an InstanceChange.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from common.messages import shown


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
        permissions = [("protect_managedinstance", _("Can protect instances from scale-in and lift it"))]
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
    # The reason as an id and its parameters (common/messages.py), rendered in the reader's language.
    reason_msgid = models.TextField(_("reason id"), blank=True)
    reason_params = models.JSONField(_("reason parameters"), default=dict, blank=True)
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

    @property
    def reason_text(self):
        """The reason in the reader's language."""
        return shown(self, "reason")


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


class Orphan(models.Model):
    """Something the portal made that no live instance accounts for: a VM carrying the ownership marker, a member of
    a managed F5 pool at an address of the service's IP pool, or an IP allocation held by no live instance.

    Found by the orphan sweep (fleet/orphans.py), shown with its age, and removed by `sweep_orphans --fix` or the
    admin's action once it has been an orphan for the grace period (a VM is powered off first and destroyed after a
    second grace). An orphan that stops being one (adopted, removed elsewhere) is closed as "gone".
    """

    class Kind(models.TextChoices):
        VM = "vm", _("VM with the portal's marker")
        MEMBER = "member", _("F5 pool member")
        ALLOCATION = "allocation", _("IP allocation")

    class State(models.TextChoices):
        FOUND = "found", _("Found")
        POWERED_OFF = "powered_off", _("Powered off (to be destroyed)")
        REMOVED = "removed", _("Removed")
        GONE = "gone", _("No longer an orphan")

    OPEN_STATES = (State.FOUND, State.POWERED_OFF)

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    # vm: the VM's managed object id; member: /partition/pool/member; allocation: the allocation's id.
    key = models.CharField(_("key"), max_length=255)
    name = models.CharField(_("what"), max_length=255, help_text=_("VM name, member or address."))
    config = models.ForeignKey(
        "autoscaling.AutoscalingConfig",
        verbose_name=_("config"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="orphans",
    )
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.FOUND)
    reason = models.CharField(_("why an orphan"), max_length=500, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    first_seen_at = models.DateTimeField(_("first seen"))
    last_seen_at = models.DateTimeField(_("last seen"))
    powered_off_at = models.DateTimeField(_("powered off at"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        ordering = ["-first_seen_at", "-pk"]
        verbose_name = _("orphan")
        verbose_name_plural = _("orphans")
        permissions = [("remove_orphan", _("Can remove orphans (power off and destroy VMs, remove members)"))]
        constraints = [
            # One open orphan per thing; closed ones are its history.
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(state__in=["found", "powered_off"]), name="orphan_one_open"
            )
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.name}"
