import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from autoscaling import flapping, promql, validation
from pipeline import contract

# Service names end up in rule names, file names, URLs and Jenkins job names: keep them to a safe slug.
service_name_validator = RegexValidator(
    r"^[a-z][a-z0-9-]{0,46}[a-z0-9]$",
    _("Use 2-48 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."),
)


class IpPoolQuerySet(models.QuerySet):
    def with_counts(self):
        """Each pool with its allocations counted by state in SQL (used_count = reserved + in use), so a list of
        pools costs one query however many there are; `IpPool.usage` reads these."""
        State = IpAllocation.State
        return self.annotate(
            used_count=models.Count("allocations", filter=models.Q(allocations__state__in=ACTIVE_STATES)),
            reserved_count=models.Count("allocations", filter=models.Q(allocations__state=State.RESERVED)),
            in_use_count=models.Count("allocations", filter=models.Q(allocations__state=State.IN_USE)),
            skipped_count=models.Count("allocations", filter=models.Q(allocations__state=State.SKIPPED)),
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

    objects = IpPoolQuerySet.as_manager()

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

    def _address_fields(self):
        return {
            "network": self.network,
            "first_address": self.first_address,
            "last_address": self.last_address,
            "gateway": self.gateway,
            "dns_servers": self.dns_servers,
            "excluded_addresses": self.excluded_addresses,
        }

    def hands_out(self, address):
        """Whether `address` is one of `usable_addresses`."""
        return validation.pool_address_usable(address, **self._address_fields())

    def usable_addresses(self):
        """The addresses IPAM hands out, lowest first: the range without the network and broadcast addresses,
        the gateway, the DNS servers and the excluded addresses."""
        return validation.pool_usable_addresses(**self._address_fields())

    @property
    def usable_count(self):
        """How many addresses `usable_addresses` yields."""
        return validation.pool_usable_count(**self._address_fields())

    @property
    def usage(self):
        """Size and counts of a pool fetched with `IpPool.objects.with_counts()`. An address that answered a ping
        is not free (IPAM retries it only after IPAM_SKIPPED_RETRY_SECONDS)."""
        size = self.usable_count
        return {
            "size": size,
            "reserved": self.reserved_count,
            "in_use": self.in_use_count,
            "skipped": self.skipped_count,
            "used": self.used_count,
            "free": max(size - self.used_count - self.skipped_count, 0),
        }

    def clean(self):
        errors = validation.ip_pool_errors(
            network=self.network,
            first_address=self.first_address,
            last_address=self.last_address,
            gateway=self.gateway,
            dns_servers=self.dns_servers,
            excluded_addresses=self.excluded_addresses,
        )
        if not errors and self.pk:
            # A pool must still hold every config's maximum after an edit.
            for config in self.configs.all():
                if self.usable_count < config.max_instances:
                    errors.setdefault("last_address", []).append(
                        gettext("The config %(service)s needs up to %(max)d addresses; this range has %(count)d.")
                        % {"service": config.service_name, "max": config.max_instances, "count": self.usable_count}
                    )
            active = list(self.allocations.filter(state__in=ACTIVE_STATES).values_list("address", flat=True))
            first, last = ipaddress.IPv4Address(self.first_address), ipaddress.IPv4Address(self.last_address)
            outside = [a for a in active if not first <= ipaddress.IPv4Address(a) <= last]
            if outside:
                errors.setdefault("first_address", []).append(
                    gettext("Addresses still allocated would fall outside the range: %(addresses)s.")
                    % {"addresses": ", ".join(outside[:10])}
                )
            # An address still reserved or in use cannot become a DNS server or an excluded address either.
            for field in ("dns_servers", "excluded_addresses"):
                taken = sorted({str(value).strip() for value in getattr(self, field) or ()} & set(active))
                if taken:
                    errors.setdefault(field, []).append(
                        gettext("Still reserved or in use, so not yet taken out of the pool: %(addresses)s.")
                        % {"addresses": ", ".join(taken[:10])}
                    )
        if errors:
            raise ValidationError(errors)


class AutoscalingConfig(models.Model):
    """How one service scales out: what to watch, when to act, and where a new VM goes."""

    class Metric(models.TextChoices):
        CPU = "cpu", _("CPU usage")
        MEMORY = "memory", _("Memory usage")

    class PolicyType(models.TextChoices):
        STEP = "step", _("Step (alert above the threshold)")
        TARGET_TRACKING = "target_tracking", _("Target tracking (keep the average at a target)")

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
    policy_type = models.CharField(
        _("scaling policy"),
        max_length=16,
        choices=PolicyType.choices,
        default=PolicyType.STEP,
        help_text=_(
            "Step: each firing alert adds “VMs per scale-out”. Target tracking: the evaluator reads the metric's "
            "average and adds ceil(N × current / target) − N VMs in one event."
        ),
    )
    target_value = models.FloatField(
        _("target value (%)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=_("Target tracking: the average of the metric the fleet is kept at or below, e.g. 60."),
    )
    max_scale_out_step = models.PositiveIntegerField(
        _("maximum VMs per scale-out"),
        default=0,
        validators=[MaxValueValidator(50)],
        help_text=_("Target tracking: at most this many VMs in one event; 0: only the maximum instances limit."),
    )

    class ScaleInOrder(models.TextChoices):
        NEWEST = "newest", _("Newest first")
        OLDEST = "oldest", _("Oldest first")

    scale_in_threshold = models.FloatField(
        _("scale-in threshold (%)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text=_(
            "Step policy: scale in when the metric stays below this for the scale-in duration; empty: never scale "
            "in on its own. Must be below the scale-out threshold, far enough that removing a VM at this level "
            "does not push the average over it."
        ),
    )
    scale_in_duration_seconds = models.PositiveIntegerField(
        _("scale-in for (seconds)"),
        default=600,
        help_text=_(
            "How long the metric must stay below the scale-in threshold (step), or low enough for one VM fewer "
            "(target tracking), before scaling in."
        ),
    )
    scale_in_cooldown_seconds = models.PositiveIntegerField(
        _("scale-in cooldown (seconds)"),
        default=300,
        help_text=_("The time after a scale-in began during which no other scale-in starts."),
    )
    scale_in_step = models.PositiveIntegerField(
        _("VMs per scale-in"), default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    scale_in_order = models.CharField(
        _("which VM goes"),
        max_length=8,
        choices=ScaleInOrder.choices,
        default=ScaleInOrder.NEWEST,
        help_text=_(
            "After unhealthy VMs and those cloned from an older template: the newest or the oldest. Protected "
            "instances never go."
        ),
    )
    drain_timeout_seconds = models.PositiveIntegerField(
        _("drain timeout (seconds)"),
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(validation.MAX_DRAIN_TIMEOUT_SECONDS)],
        help_text=_("How long a scale-in waits for the F5 member's connections to end before forcing it offline."),
    )

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
    dry_run = models.BooleanField(
        _("dry run"),
        default=False,
        help_text=_(
            "Decide and record every decision as it would be (“would scale out by 2”), but trigger nothing: no "
            "event, no Jenkins build, no VM. The cooldowns count from the would-be actions."
        ),
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
        # Operator actions (access/roles.py gives them to the operator role).
        permissions = [
            ("enable_autoscalingconfig", _("Can enable and disable autoscaling of a service")),
            ("reconcile_autoscalingconfig", _("Can reconcile a service's fleet with vCenter and F5")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_instances__lte=models.F("max_instances")),
                name="autoscaling_min_lte_max",
            ),
        ]

    def __str__(self):
        return self.service_name

    @property
    def jenkins_job_name(self):
        return contract.job_name(self.service_name)

    def _promql_changed(self):
        """Whether the custom expression is new or differs from the stored one (only then is Prometheus asked)."""
        if self._state.adding or self.pk is None:
            return True
        stored = type(self).objects.filter(pk=self.pk).values_list("promql_expression", flat=True).first()
        return stored != self.promql_expression

    def _scale_in_flap_error(self):
        """The flap guard's refusal of a step policy's scale-in threshold (autoscaling/flapping.py), or None."""
        if self.policy_type != self.PolicyType.STEP or None in (self.threshold, self.min_instances, self.max_instances):
            return None
        flap = flapping.threshold_flap(
            scale_out_threshold=self.threshold,
            scale_in_threshold=self.scale_in_threshold,
            min_instances=self.min_instances,
            max_instances=self.max_instances,
            scale_in_step=self.scale_in_step,
        )
        if flap is None:
            return None
        return gettext(
            "Too close to the scale-out threshold: at the scale-in threshold of %(low)s %% on %(n)d VMs, removing "
            "%(removed)d leaves %(after)s %% on %(left)d, above the scale-out threshold of %(high)s %%, so the "
            "service would scale in and out by turns. Use a scale-in threshold of at most %(safe)s %%."
        ) % {
            "low": f"{self.scale_in_threshold:g}",
            "n": flap.n,
            "removed": flap.removed,
            "after": f"{round(flap.after, 1):g}",
            "left": flap.n - flap.removed,
            "high": f"{self.threshold:g}",
            "safe": f"{flap.safe:g}",
        }

    def clean(self):
        errors = {}

        def add(field, message):
            errors.setdefault(field, []).append(message)

        if self.min_instances is not None and self.max_instances is not None:
            if self.min_instances > self.max_instances:
                add(
                    "max_instances",
                    gettext("The maximum (%(max)d) must not be below the minimum (%(min)d).")
                    % {"max": self.max_instances, "min": self.min_instances},
                )
            if self.max_instances < 1:
                add("max_instances", gettext("At least one instance is needed."))
        if self.threshold is not None and not 0 < self.threshold <= 100:
            add("threshold", gettext("A percentage above 0 and at most 100."))
        if self.duration_seconds is not None and self.duration_seconds > validation.MAX_DURATION_SECONDS:
            add("duration_seconds", gettext("At most 24 hours (86400 seconds)."))
        if self.scale_out_step and self.max_instances and self.scale_out_step > self.max_instances:
            add("scale_out_step", gettext("More VMs per scale-out than the maximum number of instances."))
        if self.policy_type == self.PolicyType.TARGET_TRACKING:
            if self.target_value is None:
                add("target_value", gettext("Target tracking needs a target value."))
            elif not 0 < self.target_value <= 100:
                add("target_value", gettext("A percentage above 0 and at most 100."))
        if self.scale_in_threshold is not None:
            if not 0 <= self.scale_in_threshold < 100:
                add("scale_in_threshold", gettext("A percentage of at least 0 and below 100."))
            elif self.threshold is not None and self.scale_in_threshold >= self.threshold:
                add(
                    "scale_in_threshold",
                    gettext(
                        "The scale-in threshold (%(low)s %%) must be below the scale-out threshold (%(high)s %%), "
                        "or the service would scale out and in by turns."
                    )
                    % {"low": f"{self.scale_in_threshold:g}", "high": f"{self.threshold:g}"},
                )
            elif message := self._scale_in_flap_error():
                add("scale_in_threshold", message)
        if self.scale_in_duration_seconds is not None and (
            self.scale_in_duration_seconds > validation.MAX_DURATION_SECONDS
        ):
            add("scale_in_duration_seconds", gettext("At most 24 hours (86400 seconds)."))
        if self.scale_in_step and self.max_instances and self.scale_in_step > self.max_instances:
            add("scale_in_step", gettext("More VMs per scale-in than the maximum number of instances."))
        if self.drain_timeout_seconds is not None and not (
            1 <= self.drain_timeout_seconds <= validation.MAX_DRAIN_TIMEOUT_SECONDS
        ):
            add(
                "drain_timeout_seconds",
                gettext("Between 1 and %(max)d seconds.") % {"max": validation.MAX_DRAIN_TIMEOUT_SECONDS},
            )
        if self.max_scale_out_step and self.max_instances and self.max_scale_out_step > self.max_instances:
            add("max_scale_out_step", gettext("More VMs per scale-out than the maximum number of instances."))
        if self.template_id is not None:
            template_changed = self._state.adding or (
                type(self).objects.filter(pk=self.pk).exclude(template_id=self.template_id).exists()
            )
            if (self.enabled or template_changed) and not self.template.is_ready:
                add(
                    "template",
                    gettext("The template %(name)s is %(status)s; only a ready template can be used.")
                    % {"name": self.template.name, "status": self.template.get_status_display()},
                )
        if self.ip_pool_id is not None and self.max_instances:
            usable = self.ip_pool.usable_count
            if usable < self.max_instances:
                add(
                    "ip_pool",
                    gettext("The pool %(pool)s has %(count)d usable addresses, fewer than the maximum of %(max)d.")
                    % {"pool": self.ip_pool.name, "count": usable, "max": self.max_instances},
                )
        if self.enabled and not (self.f5_pool or "").strip():
            add("f5_pool", gettext("An enabled config needs an F5 pool: every new VM joins it. Name the pool."))
        for field in ("f5_pool", "f5_partition"):
            message = validation.f5_name_error(getattr(self, field))
            if message:
                add(field, message)
        if self.promql_expression:
            message = validation.promql_syntax_error(self.promql_expression)
            if not message and self._promql_changed():
                message = promql.promql_parse_error(self.promql_expression, self.threshold)
            if message:
                add("promql_expression", message)
        for message in validation.monitored_instance_errors(
            self.monitored_instances, networks=settings.MONITORED_NETWORKS, domains=settings.MONITORED_DOMAINS
        ):
            add("monitored_instances", message)
        if self.vm_name_pattern:
            message = validation.vm_name_pattern_error(self.vm_name_pattern, self.service_name)
            if message:
                add("vm_name_pattern", message)
        if errors:
            raise ValidationError(errors)


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

    def clean(self):
        # A released row is history; one that holds its address must be an address the pool hands out.
        if self.state == self.State.RELEASED or not (self.pool_id and self.address):
            return
        if not self.pool.hands_out(self.address):
            raise ValidationError(
                {
                    "address": gettext("%(address)s is not one of the addresses the pool %(pool)s hands out.")
                    % {"address": self.address, "pool": self.pool.name}
                }
            )


ACTIVE_STATES = [IpAllocation.State.RESERVED, IpAllocation.State.IN_USE]


class ProvisioningState(models.Model):
    """The one row that says who is pushing to the monitoring host and Jenkins, and what was pushed last.

    The lease (owner + expiry, taken with a conditional UPDATE) keeps passes from overlapping across all workers
    without holding a database transaction open during the network I/O of a pass.
    """

    lease_owner = models.CharField(_("lease owner"), max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    pushed_digests = models.JSONField(
        _("pushed digests"), default=dict, blank=True, help_text=_("Path or job name -> digest of what was pushed.")
    )
    managed_jobs = models.JSONField(_("managed Jenkins jobs"), default=list, blank=True)
    last_pass_at = models.DateTimeField(_("last pass"), null=True, blank=True)
    last_status = models.CharField(_("last status"), max_length=16, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("provisioning state")
        verbose_name_plural = _("provisioning state")

    def __str__(self):
        return str(_("Provisioning state"))


class ProvisioningRun(models.Model):
    """One reconcile pass (or a request for one that has not run yet): what it found, changed and reloaded."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        MERGED = "merged", _("Merged into another pass")
        UNCHANGED = "unchanged", _("Nothing to change")
        CHANGED = "changed", _("Changes pushed")
        DIFFERS = "differs", _("Host differs (check only)")
        FAILED = "failed", _("Failed")

    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(_("requested because"), max_length=200, blank=True)
    check_only = models.BooleanField(_("check only"), default=False)
    full_check = models.BooleanField(
        _("full check"), default=True, help_text=_("Read back every Jenkins job, not only those whose config changed.")
    )
    merged_into = models.ForeignKey(
        "self", verbose_name=_("merged into"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(_("requested at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    changed_files = models.JSONField(_("changed files"), default=list, blank=True)
    jenkins_changes = models.JSONField(_("Jenkins changes"), default=list, blank=True)
    drift = models.JSONField(
        _("drift"), default=list, blank=True, help_text=_("Files or jobs changed on the host since the last push.")
    )
    reloads = models.JSONField(_("reloads"), default=list, blank=True)
    ssh_round_trips = models.PositiveIntegerField(_("SSH round trips"), default=0)
    diff = models.TextField(_("difference"), blank=True, help_text=_("Of what the portal manages; secrets masked."))
    unmanaged_diff = models.TextField(
        _("difference of the whole shared files"),
        blank=True,
        help_text=_("prometheus.yml and alertmanager.yml in full, secrets masked: administrators only."),
    )
    error = models.TextField(_("error"), blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [
            ("request_provisioningrun", _("Can ask for a provisioning pass (sync now)")),
            (
                "view_unmanaged_diff",
                _("Can see the difference of the parts of shared files the portal does not manage"),
            ),
        ]
        verbose_name = _("provisioning pass")
        verbose_name_plural = _("provisioning passes")
        indexes = [models.Index(fields=["status"], name="provisioningrun_status")]

    def __str__(self):
        return f"#{self.pk} {self.get_status_display()}"

    @property
    def duration_seconds(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ProcessSuspension(models.Model):
    """An operator suspended one scaling process of a service (autoscaling/safety.py says what each holds). A row
    while suspended; resuming deletes it (the audit trail keeps the history)."""

    class Process(models.TextChoices):
        SCALE_OUT = "scale_out", _("Scale-out")
        SCALE_IN = "scale_in", _("Scale-in")
        REPLACE = "replace", _("Replacement of lost instances")
        INTAKE = "intake", _("Alert intake")

    config = models.ForeignKey(
        AutoscalingConfig, verbose_name=_("config"), on_delete=models.CASCADE, related_name="suspensions"
    )
    process = models.CharField(_("process"), max_length=16, choices=Process.choices)
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    suspended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("suspended by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    suspended_at = models.DateTimeField(_("suspended at"))

    class Meta:
        ordering = ["config", "process"]
        verbose_name = _("suspended process")
        verbose_name_plural = _("suspended processes")
        # The operator action (access/roles.py gives it to the operator role).
        permissions = [
            ("suspend_scaling", _("Can suspend and resume a service's scaling processes and its circuit breaker"))
        ]
        constraints = [models.UniqueConstraint(fields=["config", "process"], name="suspension_one_per_process")]

    def __str__(self):
        return f"{self.config}: {self.get_process_display()}"


class CircuitBreaker(models.Model):
    """A service's consecutive failed scale-outs (events/safety.py counts them as its events finish). Open from
    SCALE_OUT_BREAKER_FAILURES of them on; autoscaling/safety.py says what that holds and when it retries."""

    config = models.OneToOneField(
        AutoscalingConfig,
        verbose_name=_("config"),
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="breaker",
    )
    failures = models.PositiveIntegerField(_("consecutive failed scale-outs"), default=0)
    last_failure_at = models.DateTimeField(_("last failure"), null=True, blank=True)
    last_failed_event_id = models.BigIntegerField(_("last failed event"), null=True, blank=True)
    opened_at = models.DateTimeField(_("opened at"), null=True, blank=True)
    reset_at = models.DateTimeField(_("resumed by an operator at"), null=True, blank=True)
    reset_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("resumed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("circuit breaker")
        verbose_name_plural = _("circuit breakers")

    def __str__(self):
        return f"{self.config}: {self.failures}"
