from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from integrations.vcenter import POWER_STATES
from templates_app.models import VMTemplate


class TemplateSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    in_use_by = serializers.SerializerMethodField(help_text=_("Autoscaling configs that use this template."))

    class Meta:
        model = VMTemplate
        fields = [
            "id",
            "name",
            "status",
            "method",
            "power_off_allowed",
            "source_vm_name",
            "source_vm_moid",
            "vcenter_moid",
            "vcenter_uuid",
            "datacenter",
            "cluster",
            "datastore",
            "folder",
            "guest_os",
            "num_cpus",
            "memory_mb",
            "disk_gb",
            "last_error",
            "notes",
            "in_use_by",
            "created_by",
            "created_at",
            "updated_at",
            "synced_at",
        ]
        read_only_fields = fields

    def get_in_use_by(self, obj) -> list[str]:
        return sorted(config.service_name for config in obj.configs.all())


class TemplateCreateSerializer(serializers.Serializer):
    source_vm = serializers.CharField(max_length=80, help_text=_("Name of the vCenter VM to turn into a template."))
    name = serializers.CharField(
        max_length=80,
        required=False,
        allow_blank=True,
        help_text=_("Template name (default: the VM's name; for a clone, '<VM>-template')."),
    )
    method = serializers.ChoiceField(choices=VMTemplate.Method.choices, default=VMTemplate.Method.MARK)
    power_off_allowed = serializers.BooleanField(
        default=False, help_text=_("Mark method only: allow the portal to power the VM off first.")
    )
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class VirtualMachineSerializer(serializers.Serializer):
    moid = serializers.CharField(help_text=_("vCenter managed object id"))
    name = serializers.CharField()
    instance_uuid = serializers.CharField()
    power_state = serializers.ChoiceField(choices=POWER_STATES)
    is_template = serializers.BooleanField()
    guest_os = serializers.CharField()
    num_cpus = serializers.IntegerField(allow_null=True)
    memory_mb = serializers.IntegerField(allow_null=True)
    disk_gb = serializers.FloatField(allow_null=True, help_text=_("Provisioned storage (GiB)"))
    ip_address = serializers.CharField()
    hostname = serializers.CharField()
    datacenter = serializers.CharField()
    folder = serializers.CharField()
    host = serializers.CharField()
    cluster = serializers.CharField()
    resource_pool = serializers.CharField()
    datastores = serializers.ListField(child=serializers.CharField())
    networks = serializers.ListField(child=serializers.CharField())


class VirtualMachineQuerySerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, help_text=_("Part of the VM name (any case)."))
    power_state = serializers.ChoiceField(choices=POWER_STATES, required=False)
    include_templates = serializers.BooleanField(default=False)
