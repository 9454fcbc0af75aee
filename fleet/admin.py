"""Admin screens of the fleet: every instance of every service, its vCenter and F5 facts and its history.

Instances are written by the pipeline's callbacks, the config services (adoption) and the reconcile, never edited
by hand: the detail is read-only, and the only operator actions (protect from scale-in, unprotect) go through
fleet.services and are written to the instance's history; removing an instance is a manual scale-in, decided by
events.intake like any other.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from access import roles
from autoscaling.models import AutoscalingConfig
from events import intake
from fleet import orphans, services
from fleet.models import InstanceChange, ManagedInstance, Orphan
from integrations.errors import IntegrationError
from templates_app.services import vcenter_vms_list


class AdoptVmForm(forms.Form):
    """Adopt a VM of vCenter into a service's fleet; the VM picker is vCenter's VM list (as the template form's)."""

    config = forms.ModelChoiceField(label=_("service"), queryset=AutoscalingConfig.objects.order_by("service_name"))
    vm = forms.ChoiceField(label=_("vCenter VM"))
    port = forms.IntegerField(
        label=_("node exporter port"),
        initial=9100,
        min_value=1,
        max_value=65535,
        help_text=_("Prometheus scrapes the VM's address on this port."),
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.instance = None
        self.vcenter_error = None
        try:
            self.vms = {vm.name: vm for vm in vcenter_vms_list()}
        except IntegrationError as exc:
            self.vms = {}
            self.vcenter_error = exc.message
        self.fields["vm"].choices = [("", "---------")] + [
            (vm.name, f"{vm.name} ({vm.ip_address or '-'}, {vm.power_state}, {vm.cluster or vm.host})")
            for vm in self.vms.values()
        ]
        if self.vcenter_error:
            self.fields["vm"].help_text = gettext("vCenter could not be asked: %(error)s") % {
                "error": self.vcenter_error
            }

    def clean(self):
        cleaned = super().clean()
        if self.vcenter_error:
            raise ValidationError(self.vcenter_error)
        if self.errors:
            return cleaned
        try:
            self.instance = services.instance_adopt_vm(
                config=cleaned["config"], vm=self.vms[cleaned["vm"]], port=cleaned["port"], user=self.user
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field_name, errors in exc.message_dict.items():
                    self.add_error(field_name if field_name in self.fields else None, errors)
            else:
                raise
        return cleaned


class InstanceChangeInline(admin.TabularInline):
    model = InstanceChange
    classes = ["no-row-title"]
    fields = ["at", "from_state", "to_state", "health", "reason_column", "actor"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["at", "pk"]

    @admin.display(description=_("reason"))
    def reason_column(self, change):
        return change.reason_text

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
    actions = ["protect", "unprotect", "remove"]
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
        # Adding is adopting a vCenter VM (the add page leads to the picker); created instances come from pipelines.
        return request.user.has_perm("fleet.add_managedinstance")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_protect_permission(self, request):
        return request.user.has_perm(roles.INSTANCE_PROTECT)

    def has_remove_permission(self, request):
        # Removing an instance is a manual scale-in: the operator's scale-in permission, as on the API.
        return request.user.has_perm(roles.SCALE_IN)

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

    @admin.action(description=_("Remove the selected instances (a manual scale-in each)"), permissions=["remove"])
    def remove(self, request, queryset):
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            decision = intake.instance_remove_request(instance_id=pk, user=request.user)
            if decision.event_id is None:
                self.message_user(request, decision.reason_text, messages.ERROR)
            else:
                url = reverse("admin:events_scaleoutevent_change", args=[decision.event_id])
                self.message_user(
                    request,
                    format_html(
                        '{} <a href="{}">{}</a>',
                        decision.reason_text,
                        url,
                        gettext("Scale-in event #%(event)d") % {"event": decision.event_id},
                    ),
                )

    # --- adopt a VM picked from vCenter ---------------------------------------------------------------------
    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("adopt-vm/", self.admin_site.admin_view(self.adopt_view), name=f"{prefix}_adopt"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:fleet_managedinstance_adopt"))

    def adopt_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = AdoptVmForm(request.POST, user=request.user)
            if form.is_valid():
                instance = form.instance
                self.log_addition(request, instance, [{"added": {}}])
                self.message_user(
                    request,
                    gettext("VM %(vm)s is now instance #%(instance)d of %(service)s (protected from scale-in).")
                    % {"vm": instance.vm_name, "instance": instance.pk, "service": instance.config.service_name},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:fleet_managedinstance_change", args=[instance.pk]))
        else:
            form = AdoptVmForm(user=request.user)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Adopt a vCenter VM into a service's fleet"),
            "opts": self.opts,
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/fleet/managedinstance/adopt_vm.html", context)


@admin.register(Orphan)
class OrphanAdmin(admin.ModelAdmin):
    """What the orphan sweep found (fleet/orphans.py), with its age; read-only but for the remove action."""

    list_display = ["id", "kind", "name", "service", "state", "age", "reason", "last_error"]
    list_filter = ["state", "kind", "config"]
    search_fields = ["name", "key", "reason"]
    list_select_related = ["config"]
    actions = ["remove"]
    readonly_fields = [
        "kind",
        "key",
        "name",
        "config",
        "state",
        "reason",
        "details",
        "first_seen_at",
        "last_seen_at",
        "powered_off_at",
        "closed_at",
        "last_error",
    ]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_remove_permission(self, request):
        # Removing powers VMs off and destroys them in vCenter: a destructive action.
        return request.user.has_perm(roles.ORPHAN_REMOVE)

    @admin.display(description=_("service"), ordering="config__service_name")
    def service(self, obj):
        return obj.config.service_name if obj.config_id else "-"

    @admin.display(description=_("age"), ordering="first_seen_at")
    def age(self, obj):
        return timesince(obj.first_seen_at, timezone.now())

    @admin.action(
        description=_("Remove the selected orphans past their grace period (a VM: power off, destroy later)"),
        permissions=["remove"],
    )
    def remove(self, request, queryset):
        ids = set(queryset.filter(state__in=Orphan.OPEN_STATES).values_list("pk", flat=True))
        result = orphans.orphans_sweep(fix=True, only_ids=ids, actor=f"user {request.user}")
        for line in result.fixed:
            self.message_user(request, line)
        for error in result.errors:
            self.message_user(request, error, messages.ERROR)
        if not result.fixed and not result.errors:
            self.message_user(
                request,
                gettext("Nothing removed: an orphan is removed once it has been one for %(grace)d s.")
                % {"grace": settings.FLEET_ORPHAN_GRACE},
                messages.WARNING,
            )
