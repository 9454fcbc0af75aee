import ipaddress

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

# Service names end up in rule names, file names, URLs and Jenkins job names: keep them to a safe slug.
service_name_validator = RegexValidator(
    r"^[a-z][a-z0-9-]{0,46}[a-z0-9]$",
    _("Use 2-48 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."),
)


class IpPool(models.Model):
    """A range of addresses new VMs of a service take their static IP from."""

    name = models.CharField(_("name"), max_length=64, unique=True)
    network = models.CharField(_("network"), max_length=64, help_text=_("CIDR, e.g. 10.0.10.0/24."))
    first_address = models.GenericIPAddressField(_("first address"), protocol="IPv4")
    last_address = models.GenericIPAddressField(_("last address"), protocol="IPv4")
    gateway = models.GenericIPAddressField(_("gateway"), protocol="IPv4", null=True, blank=True)
    dns_servers = models.JSONField(_("DNS servers"), default=list, blank=True)
    excluded_addresses = models.JSONField(_("excluded addresses"), default=list, blank=True)
    ping_check = models.BooleanField(
        _("ping check"), default=True, help_text=_("Skip an address that answers a ping before handing it out.")
    )
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("IP pool")
        verbose_name_plural = _("IP pools")

    def __str__(self):
        return self.name

    @property
    def prefix_length(self):
        return ipaddress.ip_network(self.network, strict=False).prefixlen

    @property
    def netmask(self):
        return str(ipaddress.ip_network(self.network, strict=False).netmask)


class AutoscalingConfig(models.Model):
    """How one service scales out: what to watch, when to act, and where a new VM goes."""

    class Metric(models.TextChoices):
        CPU = "cpu", _("CPU usage")
        MEMORY = "memory", _("Memory usage")

    class SyncState(models.TextChoices):
        PENDING = "pending", _("Waiting for sync")
        SYNCED = "synced", _("In sync")
        ERROR = "error", _("Sync failed")

    service_name = models.CharField(_("service name"), max_length=48, unique=True, validators=[service_name_validator])
    description = models.TextField(_("description"), blank=True)
    template = models.ForeignKey(
        "templates_app.VMTemplate", verbose_name=_("template"), on_delete=models.PROTECT, related_name="configs"
    )
    enabled = models.BooleanField(_("enabled"), default=False)

    metric = models.CharField(_("metric"), max_length=16, choices=Metric.choices, default=Metric.CPU)
    threshold = models.FloatField(
        _("scale-out threshold (%)"), default=80.0, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    duration_seconds = models.PositiveIntegerField(
        _("for (seconds)"), default=300, help_text=_("How long the threshold must be exceeded before scaling out.")
    )
    promql_expression = models.TextField(
        _("custom PromQL expression"),
        blank=True,
        help_text=_("Optional. Replaces the default expression of the metric; must yield a percentage."),
    )
    min_instances = models.PositiveIntegerField(_("minimum instances"), default=1)
    max_instances = models.PositiveIntegerField(_("maximum instances"), default=4)
    scale_out_step = models.PositiveIntegerField(
        _("VMs per scale-out"), default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    cooldown_seconds = models.PositiveIntegerField(_("cooldown (seconds)"), default=300)

    datacenter = models.CharField(_("datacenter"), max_length=80, blank=True)
    cluster = models.CharField(_("cluster"), max_length=200, blank=True)
    resource_pool = models.CharField(_("resource pool"), max_length=400, blank=True)
    folder = models.CharField(_("VM folder"), max_length=400, blank=True)
    datastore = models.CharField(_("datastore"), max_length=200, blank=True)
    network = models.CharField(_("network"), max_length=200, blank=True)
    vm_name_pattern = models.CharField(
        _("VM name pattern"),
        max_length=80,
        default="{service}-{n:03d}",
        help_text=_("Placeholders: {service} and {n} (the next free number)."),
    )

    ip_pool = models.ForeignKey(
        IpPool, verbose_name=_("IP pool"), on_delete=models.PROTECT, related_name="configs", null=True, blank=True
    )
    f5_pool = models.CharField(_("F5 pool"), max_length=120, blank=True)
    f5_partition = models.CharField(_("F5 partition"), max_length=64, default="Common")
    f5_member_port = models.PositiveIntegerField(
        _("F5 member port"), default=80, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    monitored_instances = models.JSONField(
        _("monitored instances"),
        default=list,
        blank=True,
        help_text=_("host:port targets Prometheus scrapes for this service (node_exporter)."),
    )

    sync_state = models.CharField(_("sync state"), max_length=16, choices=SyncState.choices, default=SyncState.PENDING)
    synced_at = models.DateTimeField(_("last pushed"), null=True, blank=True)
    synced_digest = models.CharField(_("pushed digest"), max_length=64, blank=True)
    sync_error = models.TextField(_("last sync error"), blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["service_name"]
        verbose_name = _("autoscaling config")
        verbose_name_plural = _("autoscaling configs")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_instances__lte=models.F("max_instances")),
                name="autoscaling_min_lte_max",
            ),
        ]

    def __str__(self):
        return self.service_name


class IpAllocation(models.Model):
    """One address of a pool, reserved for or used by a VM of a scale-out."""

    class State(models.TextChoices):
        RESERVED = "reserved", _("Reserved")
        IN_USE = "in_use", _("In use")
        RELEASED = "released", _("Released")
        SKIPPED = "skipped", _("Answered ping, skipped")

    pool = models.ForeignKey(IpPool, verbose_name=_("pool"), on_delete=models.CASCADE, related_name="allocations")
    address = models.GenericIPAddressField(_("address"), protocol="IPv4")
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.RESERVED)
    event = models.ForeignKey(
        "events.ScaleOutEvent",
        verbose_name=_("event"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ip_allocations",
    )
    vm_name = models.CharField(_("VM name"), max_length=80, blank=True)
    note = models.CharField(_("note"), max_length=200, blank=True)
    reserved_at = models.DateTimeField(_("reserved at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)

    class Meta:
        ordering = ["pool", "address"]
        verbose_name = _("IP allocation")
        verbose_name_plural = _("IP allocations")
        constraints = [
            models.UniqueConstraint(fields=["pool", "address"], name="ipallocation_unique_address_in_pool"),
        ]

    def __str__(self):
        return f"{self.address} ({self.get_state_display()})"
