from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from common.messages import shown


class AlertNotification(models.Model):
    """One webhook delivery from Alertmanager, stored as received."""

    service_name = models.CharField(_("service"), max_length=48, db_index=True)
    config = models.ForeignKey(
        "autoscaling.AutoscalingConfig",
        verbose_name=_("config"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    status = models.CharField(_("status"), max_length=16)
    group_key = models.TextField(_("group key"))
    receiver = models.CharField(_("receiver"), max_length=200, blank=True)
    payload = models.JSONField(_("payload"))
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    # Set when its alerts are decided: the webhook stores the notification and answers; the decider
    # (events.intake.notifications_decide) decides the waiting ones behind the answer, a batch at a time.
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("alert notification")
        verbose_name_plural = _("alert notifications")
        indexes = [
            # The decider's queue: only the notifications still waiting are in it.
            models.Index(fields=["id"], name="notification_waiting", condition=models.Q(decided_at__isnull=True)),
        ]

    def __str__(self):
        return f"{self.service_name} {self.status} {self.received_at:%Y-%m-%d %H:%M:%S}"


class ScaleOutEvent(models.Model):
    """One scale-out of a service, from the decision to the pipeline's last step."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        TRIGGERED = "triggered", _("Triggered")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        ROLLED_BACK = "rolled_back", _("Rolled back")
        CANCELLED = "cancelled", _("Cancelled")

    ACTIVE_STATUSES = (Status.PENDING, Status.TRIGGERED, Status.RUNNING)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.CANCELLED)

    class Source(models.TextChoices):
        ALERT = "alert", _("Alert")
        MANUAL = "manual", _("Manual")
        METRIC = "metric", _("Metric (target tracking)")
        REPLACE = "replace", _("Replace (below the minimum)")

    class Action(models.TextChoices):
        SCALE_OUT = "scale_out", _("Scale out")
        SCALE_IN = "scale_in", _("Scale in")

    config = models.ForeignKey(
        "autoscaling.AutoscalingConfig", verbose_name=_("config"), on_delete=models.PROTECT, related_name="events"
    )
    # A scale-out adds vm_count VMs; a scale-in removes the instances whose removed_by_event is this event.
    action = models.CharField(_("action"), max_length=16, choices=Action.choices, default=Action.SCALE_OUT)
    # No index of its own: event_service_created (service_name, -created_at) serves every lookup by service.
    service_name = models.CharField(_("service"), max_length=48)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(_("source"), max_length=8, choices=Source.choices, default=Source.ALERT)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    alert_name = models.CharField(_("alert"), max_length=200, blank=True)
    alert_labels = models.JSONField(_("alert labels"), default=dict, blank=True)
    alert_value = models.CharField(_("value"), max_length=64, blank=True)
    alert_starts_at = models.DateTimeField(_("alert started at"), null=True, blank=True)
    notification = models.ForeignKey(
        AlertNotification,
        verbose_name=_("notification"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )
    vm_count = models.PositiveIntegerField(_("VMs"), default=1)
    reason = models.TextField(_("operator's reason"), blank=True)
    # The portal's own reasons and errors as an id and its parameters (common/messages.py), shown translated.
    reason_msgid = models.TextField(_("reason id"), blank=True)
    reason_params = models.JSONField(_("reason parameters"), default=dict, blank=True)

    jenkins_job = models.CharField(_("Jenkins job"), max_length=200, blank=True)
    jenkins_queue_id = models.BigIntegerField(_("Jenkins queue item"), null=True, blank=True)
    build_number = models.PositiveIntegerField(_("build number"), null=True, blank=True, db_index=True)
    build_url = models.URLField(_("build URL"), max_length=500, blank=True)
    trigger_attempts = models.PositiveIntegerField(_("trigger attempts"), default=0)
    # Set by the one task run that may start the build; an expired claim is taken over by the sweep.
    trigger_claimed_at = models.DateTimeField(_("trigger claimed at"), null=True, blank=True)
    callback_token_hash = models.CharField(_("callback token hash"), max_length=128, blank=True)

    vm_names = models.JSONField(_("VM names"), default=list, blank=True)
    vm_ips = models.JSONField(_("VM IPs"), default=list, blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    triggered_at = models.DateTimeField(_("triggered at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    # Indexed: /metrics reads the events in progress or finished since its checkpoint (events/history.py).
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    error = models.TextField(_("error"), blank=True)
    error_msgid = models.TextField(_("error id"), blank=True)
    error_params = models.JSONField(_("error parameters"), default=dict, blank=True)
    failed_step = models.CharField(_("failed step"), max_length=64, blank=True)
    build_log = models.TextField(_("build log"), blank=True)
    build_log_truncated = models.BooleanField(_("build log truncated"), default=False)
    build_log_fetched_at = models.DateTimeField(_("build log fetched at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("scale-out event")
        verbose_name_plural = _("scale-out events")
        permissions = [
            ("request_scale_out", _("Can request a manual scale-out")),
            ("request_scale_in", _("Can request a manual scale-in")),
        ]
        indexes = [
            models.Index(fields=["service_name", "-created_at"], name="event_service_created"),
            # A page and its count for a service and a status read the index alone (issue 19).
            models.Index(fields=["service_name", "status", "-created_at"], name="event_service_status_created"),
            models.Index(fields=["status", "-created_at"], name="event_status_created"),
            # The cooldown check reads a config's newest event under the config's lock.
            models.Index(fields=["config", "-created_at"], name="event_config_created"),
            # A decision's "newest scale-out" and "newest scale-in" of the config: one index entry each, however
            # many events of the other kind it has (issue 19).
            models.Index(fields=["config", "action", "-created_at"], name="event_config_action_created"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.service_name} ({self.get_status_display()})"

    @property
    def reason_text(self):
        """The reason in the reader's language."""
        return shown(self, "reason")

    @property
    def error_text(self):
        """The error in the reader's language."""
        return shown(self, "error")

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_finished(self):
        return self.status in self.FINAL_STATUSES


class EventAction(models.Model):
    """One step of a scale-out's pipeline, reported by the pipeline through a callback."""

    class Step(models.TextChoices):
        IP_ALLOCATE = "ip_allocate", _("IP allocation")
        VM_CLONE = "vm_clone", _("VM clone")
        VM_CUSTOMIZE = "vm_customize", _("Guest customization")
        VM_POWER_ON = "vm_power_on", _("Power on")
        VM_GUEST_IP = "vm_guest_ip", _("Guest IP")
        F5_ADD = "f5_add", _("F5 pool member add")
        HEALTH_CHECK = "health_check", _("Health check")
        MONITORING_ADD = "monitoring_add", _("Monitoring target add")
        ROLLBACK_F5 = "rollback_f5", _("Rollback: F5 member remove")
        ROLLBACK_VM = "rollback_vm", _("Rollback: VM destroy")
        ROLLBACK_IP = "rollback_ip", _("Rollback: IP release")
        TRIGGER = "trigger", _("Jenkins trigger")
        # Scale-in, in the pipeline's order; a failure before vm_destroy re-enables the member.
        F5_DISABLE = "f5_disable", _("F5 member disable")
        F5_DRAIN = "f5_drain", _("Connection drain")
        F5_OFFLINE = "f5_offline", _("F5 member force offline")
        F5_REMOVE = "f5_remove", _("F5 member remove")
        VM_SHUTDOWN = "vm_shutdown", _("Guest shutdown")
        VM_DESTROY = "vm_destroy", _("VM destroy")
        IP_RELEASE = "ip_release", _("IP release")
        MONITORING_REMOVE = "monitoring_remove", _("Monitoring target remove")
        ROLLBACK_F5_ENABLE = "rollback_f5_enable", _("Rollback: F5 member re-enable")

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")

    event = models.ForeignKey(ScaleOutEvent, verbose_name=_("event"), on_delete=models.CASCADE, related_name="actions")
    step = models.CharField(_("step"), max_length=32, choices=Step.choices)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.RUNNING)
    message = models.TextField(_("message"), blank=True)
    # The message as an id and its parameters (common/messages.py), rendered in the reader's language.
    message_msgid = models.TextField(_("message id"), blank=True)
    message_params = models.JSONField(_("message parameters"), default=dict, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["event", "started_at", "id"]
        verbose_name = _("event step")
        verbose_name_plural = _("event steps")
        constraints = [
            models.UniqueConstraint(fields=["event", "step"], name="eventaction_one_row_per_step"),
        ]

    def __str__(self):
        return f"{self.get_step_display()}: {self.get_status_display()}"

    @property
    def message_text(self):
        """The message in the reader's language."""
        return shown(self, "message")

    @property
    def duration_seconds(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ScalingDecision(models.Model):
    """What the portal decided for one alert of a notification (or a manual request), and why."""

    class Outcome(models.TextChoices):
        SCALE_OUT = "scale_out", _("Scale out")
        DUPLICATE = "duplicate", _("Duplicate notification")
        UNKNOWN_SERVICE = "unknown_service", _("Unknown service")
        DISABLED = "disabled", _("Config disabled")
        COOLDOWN = "cooldown", _("In cooldown")
        AT_MAX = "at_max", _("At maximum instances")
        ALREADY_SCALING = "already_scaling", _("Already scaling")
        RESOLVED = "resolved", _("Alert resolved")
        REPLACE = "replace", _("Replace (below the minimum)")
        NOT_FIRING = "not_firing", _("No alert firing")
        ON_TARGET = "on_target", _("At or below the target")
        NO_METRIC = "no_metric", _("No metric value")
        NOT_A_SIGNAL = "not_a_signal", _("Not this policy's signal")
        SCALE_IN = "scale_in", _("Scale in")
        AT_MIN = "at_min", _("At minimum instances")
        WARMING_UP = "warming_up", _("New VMs warming up")
        NO_CANDIDATE = "no_candidate", _("No instance may be removed")
        NOT_IDLE = "not_idle", _("Not low enough to scale in")
        FLAP_HOLD = "flap_hold", _("Scale-in held (flapping)")
        SUSPENDED = "suspended", _("Suspended by an operator")
        BREAKER_OPEN = "breaker_open", _("Circuit breaker open")

    # Outcomes that took an action (an event); the others are "not scaled".
    ACTIONS = (Outcome.SCALE_OUT, Outcome.REPLACE, Outcome.SCALE_IN)

    notification = models.ForeignKey(
        AlertNotification,
        verbose_name=_("notification"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="decisions",
    )
    service_name = models.CharField(_("service"), max_length=48, db_index=True)
    config = models.ForeignKey(
        "autoscaling.AutoscalingConfig",
        verbose_name=_("config"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
    )
    outcome = models.CharField(_("decision"), max_length=20, choices=Outcome.choices)
    reason = models.TextField(_("reason"))
    # The reason as an id and its parameters (common/messages.py), rendered in the reader's language.
    reason_msgid = models.TextField(_("reason id"), blank=True)
    reason_params = models.JSONField(_("reason parameters"), default=dict, blank=True)
    alert_name = models.CharField(_("alert"), max_length=200, blank=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=64, blank=True)
    starts_at = models.DateTimeField(_("alert started at"), null=True, blank=True)
    group_key = models.TextField(_("group key"), blank=True)
    # Set only for the decision that first claims an alert; a repeat of the same alert collides here.
    dedup_key = models.CharField(_("deduplication key"), max_length=64, null=True, blank=True, unique=True)
    event = models.ForeignKey(
        ScaleOutEvent,
        verbose_name=_("event"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
    )
    decided_at = models.DateTimeField(_("decided at"), auto_now_add=True, db_index=True)
    # Decided for a dry-run config: an action outcome here is a would-be action (no event was created).
    dry_run = models.BooleanField(_("dry run"), default=False)

    class Meta:
        ordering = ["-decided_at", "-id"]
        verbose_name = _("scaling decision")
        verbose_name_plural = _("scaling decisions")
        indexes = [
            # The evaluator reads each service's last recorded outcome; the webhook, whether an alert (same
            # fingerprint and start) already scaled out through the evaluator.
            models.Index(fields=["config", "-id"], name="decision_config_newest"),
            models.Index(fields=["config", "fingerprint", "starts_at"], name="decision_config_alert"),
        ]

    def __str__(self):
        return f"{self.service_name}: {self.get_outcome_display()}"

    @property
    def reason_text(self):
        """The reason in the reader's language."""
        return shown(self, "reason")


class EvaluatorState(models.Model):
    """The one row that says which evaluator run owns the passes and which 15-second tick ran last.

    Every pass claims its tick with a conditional UPDATE on this row, so a tick runs once however many runs are
    alive; a run that starts takes the ownership over and the one before it stops at its next tick. Nothing else
    is kept in memory: a restart loses at most the passes until the next scheduled run.
    """

    owner = models.CharField(_("owner"), max_length=64, blank=True)
    owner_since = models.DateTimeField(_("owner since"), null=True, blank=True)
    last_tick = models.DateTimeField(_("last tick"), null=True, blank=True)
    last_pass_at = models.DateTimeField(_("last pass"), null=True, blank=True)
    last_pass_seconds = models.FloatField(_("last pass duration (s)"), null=True, blank=True)
    last_summary = models.CharField(_("last pass summary"), max_length=300, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("evaluator state")
        verbose_name_plural = _("evaluator state")

    def __str__(self):
        return str(_("Evaluator state"))


class MetricsCheckpoint(models.Model):
    """The one row holding the figures of the event history up to `through` (events/history.py): /metrics adds
    only the rows after it, and pruning deletes only rows before it, so the counters never go down."""

    through = models.DateTimeField(_("folded through"), null=True, blank=True)
    figures = models.JSONField(_("figures"), default=dict, blank=True)
    folded_at = models.DateTimeField(_("folded at"), null=True, blank=True)
    pruned_at = models.DateTimeField(_("pruned at"), null=True, blank=True)

    class Meta:
        verbose_name = _("metrics checkpoint")
        verbose_name_plural = _("metrics checkpoint")

    def __str__(self):
        return str(_("Metrics checkpoint"))
