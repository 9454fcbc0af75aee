"""The audit trail in the admin: read-only for everyone (superusers included), filtered by door, action, user."""

from auditlog.admin import LogEntryAdmin
from django.contrib import admin
from django.utils.html import format_html, format_html_join
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

    @admin.display(description=_("Changes"))
    def msg(self, obj):
        """Field, before, after (an empty value shows as a dash; a many-to-many change as its operation)."""
        rows = []
        for field, values in (obj.changes_display_dict or {}).items():
            if isinstance(values, dict):
                before, after = values.get("operation", ""), ", ".join(str(o) for o in values.get("objects", []))
            else:
                before, after = values
            rows.append((field, _shown(before), _shown(after)))
        if not rows:
            return "-"
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>", _("field"), _("before"), _("after"), body
        )

    def get_readonly_fields(self, request, obj=None):
        return [f for _name, fieldset in self.fieldsets for f in fieldset["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _shown(value):
    return "—" if value in (None, "None", "") else value
