from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from access import roles
from integrations.errors import IntegrationError
from templates_app import services
from templates_app.models import VMTemplate

BADGE_COLOURS = {
    VMTemplate.Status.CONVERTING: "#1f6fb2",
    VMTemplate.Status.READY: "#2e7d32",
    VMTemplate.Status.FAILED: "#c62828",
    VMTemplate.Status.MISSING: "#8d6e63",
}


class TemplateCreateForm(forms.Form):
    """Turn a vCenter VM into a template; the VM picker is filled from vCenter when the form is built."""

    source_vm = forms.ChoiceField(label=gettext_lazy("vCenter VM"))
    name = forms.CharField(
        label=gettext_lazy("template name"),
        max_length=80,
        required=False,
        help_text=gettext_lazy("Default: the VM's name (for a clone: '<VM>-template')."),
    )
    method = forms.ChoiceField(
        label=gettext_lazy("conversion method"),
        choices=VMTemplate.Method.choices,
        initial=VMTemplate.Method.MARK,
        widget=forms.RadioSelect,
    )
    power_off_allowed = forms.BooleanField(
        label=gettext_lazy("power off allowed"),
        required=False,
        help_text=gettext_lazy("Mark method: allow the portal to power a running VM off first."),
    )
    notes = forms.CharField(label=gettext_lazy("notes"), required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.template = None
        self.vcenter_error = None
        try:
            vms = services.vcenter_vms_list()
        except IntegrationError as exc:
            vms = []
            self.vcenter_error = exc.message
        choices = [("", "---------")]
        for vm in vms:
            where = vm.cluster or vm.host
            choices.append((vm.name, f"{vm.name} ({vm.power_state}, {where}, {vm.folder})"))
        self.fields["source_vm"].choices = choices
        if self.vcenter_error:
            self.fields["source_vm"].help_text = _("vCenter could not be asked: %(error)s") % {
                "error": self.vcenter_error
            }

    def clean(self):
        cleaned = super().clean()
        if self.vcenter_error:
            raise ValidationError(self.vcenter_error)
        if self.errors:
            return cleaned
        try:
            self.template = services.template_create(
                source_vm=cleaned["source_vm"],
                name=cleaned.get("name", ""),
                method=cleaned["method"],
                power_off_allowed=cleaned.get("power_off_allowed", False),
                notes=cleaned.get("notes", ""),
                user=self.user,
            )
        except ValidationError as exc:
            for field_name, errors in exc.message_dict.items():
                self.add_error(field_name if field_name in self.fields else None, errors)
        except IntegrationError as exc:
            raise ValidationError(exc.message) from None
        return cleaned


@admin.register(VMTemplate)
class VMTemplateAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status_badge",
        "method",
        "source_vm_name",
        "cluster",
        "guest_os",
        "num_cpus",
        "memory_mb",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "method", "datacenter", "cluster"]
    search_fields = ["name", "source_vm_name", "vcenter_moid", "vcenter_uuid"]
    ordering = ["name"]
    actions = ["sync_from_vcenter", "delete_templates", "retry_conversion"]
    fieldsets = [
        (None, {"fields": ["name", "status_badge", "last_error", "notes"]}),
        (
            gettext_lazy("vCenter"),
            {"fields": [*services.FACT_FIELDS, "synced_at"]},
        ),
        (
            gettext_lazy("Conversion"),
            {"fields": ["method", "power_off_allowed", "source_vm_name", "source_vm_moid", "configs_using"]},
        ),
        (gettext_lazy("History"), {"fields": ["created_by", "created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"] if f != "notes"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by delete_templates (the service checks configs)
        return actions

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-size:11px;'
            'white-space:nowrap">{}</span>',
            BADGE_COLOURS.get(obj.status, "#616161"),
            obj.get_status_display(),
        )

    @admin.display(description=gettext_lazy("used by autoscaling configs"))
    def configs_using(self, obj):
        names = sorted(obj.configs.values_list("service_name", flat=True))
        return ", ".join(names) or "-"

    # --- create from a vCenter VM ------------------------------------------------------------------------------
    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("create-from-vm/", self.admin_site.admin_view(self.create_view), name=f"{prefix}_create"),
            path("sync/", self.admin_site.admin_view(self.sync_view), name=f"{prefix}_sync"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:templates_app_vmtemplate_create"))

    def create_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = TemplateCreateForm(request.POST, user=request.user)
            if form.is_valid():
                template = form.template
                self.log_addition(request, template, [{"added": {}}])
                self.message_user(
                    request,
                    _("Template %(name)s is being converted from VM %(vm)s.")
                    % {"name": template.name, "vm": template.source_vm_name},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:templates_app_vmtemplate_change", args=[template.pk]))
        else:
            form = TemplateCreateForm(user=request.user)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Create a template from a vCenter VM"),
            "opts": self.opts,
            "form": form,
            "adminform": helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/templates_app/vmtemplate/create_from_vm.html", context)

    # --- sync --------------------------------------------------------------------------------------------------
    def has_sync_permission(self, request):
        return request.user.has_perm(roles.TEMPLATE_SYNC)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "has_sync_permission": self.has_sync_permission(request)}
        return super().changelist_view(request, extra_context)

    def sync_view(self, request):
        if request.method != "POST" or not self.has_sync_permission(request):
            raise PermissionDenied
        self._sync(request)
        return HttpResponseRedirect(reverse("admin:templates_app_vmtemplate_changelist"))

    def _sync(self, request):
        try:
            result = services.templates_sync(user=request.user)
        except IntegrationError as exc:
            self.message_user(request, _("Sync failed: %(error)s") % {"error": exc.message}, messages.ERROR)
            return
        self.message_user(request, _("Synced from vCenter: %(summary)s.") % {"summary": result.summary()})
        for line in result.skipped:
            self.message_user(request, _("Skipped %(line)s.") % {"line": line}, messages.WARNING)

    @admin.action(description=gettext_lazy("Sync all templates from vCenter"), permissions=["sync"])
    def sync_from_vcenter(self, request, queryset):
        self._sync(request)

    # --- delete ------------------------------------------------------------------------------------------------
    @admin.action(description=gettext_lazy("Delete selected templates"), permissions=["delete"])
    def delete_templates(self, request, queryset):
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": _("Delete templates?"),
                "opts": self.opts,
                "templates": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "can_delete_in_vcenter": request.user.has_perm(roles.TEMPLATE_DELETE_IN_VCENTER),
            }
            return TemplateResponse(request, "admin/templates_app/vmtemplate/delete_templates.html", context)
        in_vcenter = request.POST.get("delete_in_vcenter") == "on"
        if in_vcenter and not request.user.has_perm(roles.TEMPLATE_DELETE_IN_VCENTER):
            raise PermissionDenied
        deleted = 0
        for template in queryset:
            try:
                services.template_delete(template=template, delete_in_vcenter=in_vcenter, user=request.user)
            except (services.TemplateInUseError, services.TemplateBusyError) as exc:
                self.message_user(request, exc.message, messages.ERROR)
            except IntegrationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                deleted += 1
        if deleted:
            self.message_user(
                request,
                ngettext("Deleted %(count)d template.", "Deleted %(count)d templates.", deleted) % {"count": deleted},
            )
        return None

    def delete_model(self, request, obj):
        services.template_delete(template=obj, user=request.user)

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and request.method == "POST":
            if not self.has_delete_permission(request, obj):
                raise PermissionDenied
            try:
                services.template_delete(template=obj, user=request.user)
            except (services.TemplateInUseError, services.TemplateBusyError) as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:templates_app_vmtemplate_change", args=[obj.pk]))
            self.message_user(request, _("Deleted template %(name)s.") % {"name": obj.name})
            return HttpResponseRedirect(reverse("admin:templates_app_vmtemplate_changelist"))
        return super().delete_view(request, object_id, extra_context)

    # --- retry -------------------------------------------------------------------------------------------------
    # A retry converts the VM again (the mark method may power it off): as for creating a template from a VM.
    @admin.action(description=gettext_lazy("Retry failed conversions"), permissions=["add"])
    def retry_conversion(self, request, queryset):
        for template in queryset:
            try:
                services.template_retry(template=template, user=request.user)
            except ValidationError as exc:
                self.message_user(request, f"{template.name}: {' '.join(exc.messages)}", messages.WARNING)
            else:
                self.message_user(request, _("Conversion of %(name)s queued again.") % {"name": template.name})
