"""Admin screens of the fleet: every instance of every service, its vCenter and F5 facts and its history.

Instances are written by the pipeline's callbacks, the config services (adoption) and the reconcile, never edited
by hand: the detail is read-only, and the only operator actions (protect from scale-in, unprotect) go through
fleet.services and are written to the instance's history.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from fleet import services
from fleet.models import InstanceChange, ManagedInstance


class InstanceChangeInline(admin.TabularInline):
    model = InstanceChange
    fields = ["at", "from_state", "to_state", "health", "reason", "actor"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["at", "pk"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ManagedInstance)
class ManagedInstanceAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "service",
        "vm_name",
        "ip_address",
        "state",
        "health",
        "protected_from_scale_in",
        "created_by",
        "age",
    ]
    list_display_links = ["id", "vm_name"]
    list_filter = ["config", "state", "health", "origin", "protected_from_scale_in"]
    search_fields = ["vm_name", "ip_address", "monitor_target", "vcenter_uuid"]
    list_select_related = ["config", "created_by_event"]
    actions = ["protect", "unprotect"]
    inlines = [InstanceChangeInline]
    fieldsets = [
        (None, {"fields": ["config", "origin", "state", "protected_from_scale_in", "template"]}),
        (_("vCenter"), {"fields": ["vm_name", "vcenter_uuid", "power_state", "guest_heartbeat", "last_seen_at"]}),
        (_("Network and F5"), {"fields": ["ip_address", "ip_allocation", "monitor_target", "f5_member", "f5_state"]}),
        (_("Health"), {"fields": ["health", "health_reason", "unhealthy_since"]}),
        (
            _("Events and times"),
            {
                "fields": [
                    "created_by_event",
                    "removed_by_event",
                    "created_at",
                    "in_service_at",
                    "removed_at",
                    "updated_at",
                ]
            },
        ),
    ]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_protect_permission(self, request):
        # Protecting an instance changes what scale-in may choose: whoever may change configs may do it.
        return request.user.has_perm("autoscaling.change_autoscalingconfig")

    @admin.display(description=_("service"), ordering="config__service_name")
    def service(self, obj):
        return obj.config.service_name

    @admin.display(description=_("created by event"), ordering="created_by_event")
    def created_by(self, obj):
        if obj.created_by_event_id is None:
            return "-"
        url = reverse("admin:events_scaleoutevent_change", args=[obj.created_by_event_id])
        return format_html('<a href="{}">#{}</a>', url, obj.created_by_event_id)

    @admin.display(description=_("age"), ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at, timezone.now())

    def _protect(self, request, queryset, protected):
        changed = sum(
            services.instance_protect(instance_id=pk, protected=protected, user=request.user)
            for pk in queryset.values_list("pk", flat=True)
        )
        message = (
            ngettext(
                "%(count)d instance protected from scale-in.", "%(count)d instances protected from scale-in.", changed
            )
            if protected
            else ngettext(
                "%(count)d instance no longer protected from scale-in.",
                "%(count)d instances no longer protected from scale-in.",
                changed,
            )
        )
        self.message_user(request, message % {"count": changed})

    @admin.action(description=_("Protect the selected instances from scale-in"), permissions=["protect"])
    def protect(self, request, queryset):
        self._protect(request, queryset, True)

    @admin.action(description=_("Lift the scale-in protection of the selected instances"), permissions=["protect"])
    def unprotect(self, request, queryset):
        self._protect(request, queryset, False)
