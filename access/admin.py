"""The audit trail in the admin: read-only for everyone (superusers included), filtered by door, action, user."""

from auditlog.admin import LogEntryAdmin
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from access.models import AuditEntry

# django-auditlog registers its admin for the configured model (this one); ours adds the door and forbids edits.
if admin.site.is_registered(AuditEntry):
    admin.site.unregister(AuditEntry)


@admin.register(AuditEntry)
class AuditEntryAdmin(LogEntryAdmin):
    list_display = ["created", "resource_url", "action", "operation", "msg_short", "user_url", "door", "door_detail"]
    list_filter = ["door", "action", "operation", "content_type"]
    search_fields = ["object_repr", "door_detail", "operation", "actor__username"]
    fieldsets = [
        (None, {"fields": ["created", "user_url", "resource_url", "cid"]}),
        (_("Door"), {"fields": ["door", "door_detail", "operation", "remote_addr"]}),
        (_("Changes"), {"fields": ["action", "msg", "additional_data"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [f for _name, fieldset in self.fieldsets for f in fieldset["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
