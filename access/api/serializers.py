from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from access.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    model = serializers.SerializerMethodField(help_text=_('"app_label.model" of the object, e.g. autoscaling.ippool.'))
    action = serializers.SerializerMethodField(help_text=_("create, update, delete, access or operation."))
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    changes = serializers.JSONField(
        allow_null=True, help_text=_("field -> [before, after] (m2m fields: their operation and objects).")
    )
    additional_data = serializers.JSONField(allow_null=True)

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "timestamp",
            "actor",
            "actor_email",
            "door",
            "door_detail",
            "remote_addr",
            "action",
            "operation",
            "model",
            "object_pk",
            "object_repr",
            "changes",
            "additional_data",
        ]
        read_only_fields = fields

    def get_model(self, entry) -> str:
        return f"{entry.content_type.app_label}.{entry.content_type.model}"

    def get_action(self, entry) -> str:
        return ACTION_NAMES.get(entry.action, str(entry.action))


ACTION_NAMES = {
    AuditEntry.Action.CREATE: "create",
    AuditEntry.Action.UPDATE: "update",
    AuditEntry.Action.DELETE: "delete",
    AuditEntry.Action.ACCESS: "access",
    AuditEntry.Action.OPERATION: "operation",
}
