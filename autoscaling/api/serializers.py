from django.core.exceptions import NON_FIELD_ERRORS
from django.http import QueryDict
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.settings import api_settings

from access import roles
from autoscaling import replay_service, safety_services, services
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProcessSuspension, ProvisioningRun
from templates_app.models import VMTemplate


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class IdOrNameField(serializers.PrimaryKeyRelatedField):
    """A related object by id (a number) or by its unique name (any other text); answered as its id."""

    default_error_messages = {
        "does_not_exist_name": _("There is no {model} named “{name}”."),
    }

    def to_internal_value(self, data):
        if isinstance(data, str) and data.strip() and not data.strip().isdigit():
            try:
                return self.get_queryset().get(name=data.strip())
            except self.get_queryset().model.DoesNotExist:
                model = self.get_queryset().model._meta.verbose_name
                self.fail("does_not_exist_name", model=model, name=data.strip())
        return super().to_internal_value(data)


class SuspensionSerializer(serializers.ModelSerializer):
    suspended_by = serializers.CharField(source="suspended_by.username", read_only=True, default="")

    class Meta:
        model = ProcessSuspension
        fields = ["process", "reason", "suspended_by", "suspended_at"]
        read_only_fields = fields


class BreakerSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["closed", "open"], help_text=_("Open: no scale-out is triggered."))
    failures = serializers.IntegerField(help_text=_("Consecutive failed scale-outs."))
    threshold = serializers.IntegerField(help_text=_("It opens after this many (0: never)."))
    opened_at = serializers.DateTimeField(allow_null=True)
    retry_at = serializers.DateTimeField(allow_null=True, help_text=_("When the single trial scale-out may go."))
    last_failure_at = serializers.DateTimeField(allow_null=True)
    last_failed_event = serializers.IntegerField(allow_null=True)
    resumed_at = serializers.DateTimeField(allow_null=True, help_text=_("When an operator last resumed it."))
    resumed_by = serializers.CharField()


class SuspendRequestSerializer(serializers.Serializer):
    processes = serializers.ListField(
        child=serializers.ChoiceField(choices=ProcessSuspension.Process.choices),
        required=False,
        allow_empty=False,
        help_text=_("Which processes (default: all four)."),
    )
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ResumeRequestSerializer(serializers.Serializer):
    processes = serializers.ListField(
        child=serializers.ChoiceField(choices=ProcessSuspension.Process.choices),
        required=False,
        allow_empty=False,
        help_text=_("Which processes (default: every suspended one)."),
    )


class AutoscalingConfigSerializer(serializers.ModelSerializer):
    """Refusals come all at once: the fields' own errors, unknown fields, and what the config's validation says
    about the fields that are valid (cross-field rules, the template, the pool, PromQL)."""

    template = IdOrNameField(queryset=VMTemplate.objects.all(), help_text=_("The template's id, or its name."))
    ip_pool = IdOrNameField(
        queryset=IpPool.objects.all(),
        required=False,
        allow_null=True,
        help_text=_("The IP pool's id, or its name."),
    )
    template_name = serializers.CharField(source="template.name", read_only=True)
    ip_pool_name = serializers.CharField(source="ip_pool.name", read_only=True, default=None)
    jenkins_job_name = serializers.CharField(read_only=True)
    monitored_instances = serializers.ListField(
        child=serializers.CharField(max_length=260),
        required=False,
        help_text=_("host:port targets Prometheus scrapes for this service (node_exporter)."),
    )
    suspensions = SuspensionSerializer(many=True, read_only=True, help_text=_("The processes an operator suspended."))
    breaker = serializers.SerializerMethodField(help_text=_("The circuit breaker of the service's scale-outs."))

    class Meta:
        model = AutoscalingConfig
        fields = [
            "id",
            *services.CONFIG_FIELDS,
            "template_name",
            "ip_pool_name",
            "jenkins_job_name",
            "sync_state",
            "synced_at",
            "synced_digest",
            "sync_error",
            "created_at",
            "updated_at",
            "suspensions",
            "breaker",
        ]
        read_only_fields = ["sync_state", "synced_at", "synced_digest", "sync_error", "created_at", "updated_at"]

    @extend_schema_field(BreakerSerializer)
    def get_breaker(self, obj):
        return BreakerSerializer(safety_services.breaker_state(config=obj)).data

    def to_internal_value(self, data):
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict) or not isinstance(data, dict):
                raise
            refused = dict(exc.detail)
        else:
            refused = {}
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            # A misspelt field would otherwise be ignored without a word.
            for name in sorted(set(data) - set(self.fields)):
                refused[name] = [_("Unknown field.")]
        if not refused:
            return value
        valid = self._valid_fields(data, refused)
        for field, messages in services.config_errors(config=self.instance, data=valid, exclude=refused).items():
            refused.setdefault(api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field, messages)
        raise serializers.ValidationError(refused)

    def _valid_fields(self, data, refused):
        """The values of the fields that validated, by model field name."""
        valid = {}
        for field in self._writable_fields:
            if field.field_name in refused:
                continue
            try:
                valid[field.source] = field.run_validation(field.get_value(data))
            except (serializers.ValidationError, SkipField):
                continue
        return valid


class ConfigPreviewSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text=_("The Prometheus rule group (YAML)."))
    route = serializers.CharField(help_text=_("The Alertmanager route and receiver (YAML, credentials masked)."))
    job = serializers.CharField(help_text=_("The Jenkins job's config.xml (trigger token masked)."))
    job_name = serializers.CharField()
    digest = serializers.CharField()


class IpPoolSerializer(serializers.ModelSerializer):
    prefix_length = serializers.IntegerField(read_only=True)
    netmask = serializers.CharField(read_only=True)
    size = serializers.SerializerMethodField(
        help_text=_("Addresses that can be handed out: the range minus gateway, DNS servers and excluded addresses.")
    )
    used = serializers.SerializerMethodField(help_text=_("Addresses reserved or in use."))
    free = serializers.SerializerMethodField(help_text=_("Addresses still free."))
    dns_servers = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    excluded_addresses = serializers.ListField(child=serializers.CharField(max_length=64), required=False)

    class Meta:
        model = IpPool
        fields = [
            "id",
            *services.POOL_FIELDS,
            "prefix_length",
            "netmask",
            "size",
            "used",
            "free",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def _usage(self, pool):
        # A listed pool carries its counts (IpPool.objects.with_counts()); a pool just saved costs one query.
        cache = self.context.setdefault("_usage", {})
        if pool.pk not in cache:
            cache[pool.pk] = services.ip_pool_usage(pool=pool)
        return cache[pool.pk]

    def get_size(self, pool) -> int:
        return self._usage(pool)["size"]

    def get_used(self, pool) -> int:
        return self._usage(pool)["used"]

    def get_free(self, pool) -> int:
        return self._usage(pool)["free"]


class IpAllocationSerializer(serializers.ModelSerializer):
    class Meta:
        model = IpAllocation
        fields = [
            "id",
            "pool",
            "address",
            "state",
            "event",
            "vm_name",
            "note",
            "reserved_at",
            "updated_at",
            "released_at",
        ]
        read_only_fields = fields


class ProvisioningRunSerializer(serializers.ModelSerializer):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    unmanaged_diff = serializers.SerializerMethodField(
        help_text=_(
            "prometheus.yml and alertmanager.yml in full, secrets masked; null without the permission "
            "autoscaling.view_unmanaged_diff (administrators)."
        )
    )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_unmanaged_diff(self, run):
        request = self.context.get("request")
        if request is None or not request.user.has_perm(roles.UNMANAGED_DIFF_VIEW):
            return None
        return run.unmanaged_diff

    class Meta:
        model = ProvisioningRun
        fields = [
            "id",
            "status",
            "reason",
            "check_only",
            "merged_into",
            "requested_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "changed_files",
            "jenkins_changes",
            "drift",
            "reloads",
            "ssh_round_trips",
            "diff",
            "unmanaged_diff",
            "error",
        ]
        read_only_fields = fields


class SyncRequestSerializer(serializers.Serializer):
    queued = serializers.BooleanField(help_text=_("False when a pass was already waiting; it serves this request."))
    run = serializers.IntegerField(allow_null=True)


# --- replay ------------------------------------------------------------------------------------------------------
class ReplayRequestSerializer(serializers.Serializer):
    """What to replay: the period, the resolution, and (to compare before saving) edited policy values."""

    period = serializers.ChoiceField(
        choices=list(replay_service.PERIODS), default=replay_service.DEFAULT_PERIOD, help_text=_("How far back.")
    )
    step = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text=_(
            "Seconds between the replayed points (default: the rules' evaluation interval, or the period / 43,200 "
            "when that is longer)."
        ),
    )
    policy = serializers.DictField(
        required=False,
        help_text=_(
            "Edited policy values (config field -> value: threshold, duration_seconds, min_instances, "
            "max_instances, scale_out_step, cooldown_seconds, policy_type, target_value, max_scale_out_step, "
            "scale_in_threshold, scale_in_duration_seconds, scale_in_cooldown_seconds, scale_in_step), validated "
            "as the config's; the answer compares them with the saved policy. Nothing is saved."
        ),
    )


POINTS = serializers.ListField(
    child=serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2, max_length=2),
    help_text=_("[unix seconds, value] pairs."),
)


class WouldBeEventSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    direction = serializers.ChoiceField(choices=["out", "in"])
    count = serializers.IntegerField()
    source = serializers.CharField()
    fleet_before = serializers.IntegerField(help_text=_("In service plus being created when it was decided."))
    reason = serializers.CharField(help_text=_("Why, in the reader's language (as a live decision's reason)."))
    reason_msgid = serializers.CharField()
    reason_params = serializers.DictField()


class ReplayRunSerializer(serializers.Serializer):
    policy = serializers.DictField(help_text=_("The policy values replayed."))
    scale_outs = serializers.IntegerField()
    scale_ins = serializers.IntegerField()
    vm_hours = serializers.FloatField()
    minutes_above = serializers.FloatField(help_text=_("Minutes the replayed average was above the threshold."))
    replay_seconds = serializers.FloatField()
    events = WouldBeEventSerializer(many=True)
    fleet = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text=_("[unix seconds, VMs in service] at every step."),
    )
    load = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2, max_length=2),
        help_text=_("[unix seconds, the replayed per-VM average] at every step (null: no data)."),
    )


class RecordedSerializer(serializers.Serializer):
    expression = serializers.CharField()
    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2, max_length=2),
        help_text=_("[unix seconds, the recorded per-VM average] (null: not a number)."),
    )
    fleet = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text=_("[unix seconds, VMs scraped] at every step."),
    )
    vm_hours = serializers.FloatField()
    minutes_above = serializers.FloatField()
    fetch_seconds = serializers.FloatField(help_text=_("How long the Prometheus range queries took."))


class ReplaySerializer(serializers.Serializer):
    config = serializers.IntegerField()
    service = serializers.CharField()
    period = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    step = serializers.FloatField()
    provisioning_seconds = serializers.FloatField(
        help_text=_("The median time from a scale-out's decision to its VM in service (the default when none).")
    )
    provisioning_measured_events = serializers.IntegerField(help_text=_("How many events the median is taken from."))
    drain_seconds = serializers.FloatField()
    recorded = RecordedSerializer()
    current = ReplayRunSerializer()
    edited = ReplayRunSerializer(allow_null=True)
    comparison = serializers.CharField(help_text=_("The edited policy against the current one, in words."))
    problems = serializers.ListField(child=serializers.CharField())
