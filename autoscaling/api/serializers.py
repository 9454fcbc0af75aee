from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from autoscaling import services
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProvisioningRun


class AutoscalingConfigSerializer(serializers.ModelSerializer):
    template_name = serializers.CharField(source="template.name", read_only=True)
    ip_pool_name = serializers.CharField(source="ip_pool.name", read_only=True, default=None)
    jenkins_job_name = serializers.CharField(read_only=True)
    monitored_instances = serializers.ListField(
        child=serializers.CharField(max_length=260),
        required=False,
        help_text=_("host:port targets Prometheus scrapes for this service (node_exporter)."),
    )

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
        ]
        read_only_fields = ["sync_state", "synced_at", "synced_digest", "sync_error", "created_at", "updated_at"]


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
            "error",
        ]
        read_only_fields = fields


class SyncRequestSerializer(serializers.Serializer):
    queued = serializers.BooleanField(help_text=_("False when a pass was already waiting; it serves this request."))
    run = serializers.IntegerField(allow_null=True)
