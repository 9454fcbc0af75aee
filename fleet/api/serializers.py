from rest_framework import serializers

from fleet.models import InstanceChange, ManagedInstance


class InstanceChangeSerializer(serializers.ModelSerializer):
    reason = serializers.CharField(source="reason_text", read_only=True)

    class Meta:
        model = InstanceChange
        fields = ["at", "from_state", "to_state", "health", "reason", "actor"]


class ManagedInstanceSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="config.service_name", read_only=True)

    class Meta:
        model = ManagedInstance
        fields = [
            "id",
            "service",
            "origin",
            "state",
            "vm_name",
            "vcenter_uuid",
            "ip_address",
            "ip_allocation",
            "monitor_target",
            "f5_member",
            "template",
            "health",
            "health_reason",
            "unhealthy_since",
            "power_state",
            "guest_heartbeat",
            "f5_state",
            "protected_from_scale_in",
            "created_by_event",
            "removed_by_event",
            "created_at",
            "updated_at",
            "in_service_at",
            "removed_at",
            "last_seen_at",
        ]
        read_only_fields = fields


class ManagedInstanceDetailSerializer(ManagedInstanceSerializer):
    history = InstanceChangeSerializer(many=True, read_only=True)

    class Meta(ManagedInstanceSerializer.Meta):
        fields = [*ManagedInstanceSerializer.Meta.fields, "history"]
        read_only_fields = fields
