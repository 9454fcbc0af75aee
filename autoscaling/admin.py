from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import model_ngettext, quote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from access import roles
from autoscaling import replay_charts, replay_service, services, validation
from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool, ProvisioningRun
from autoscaling.safety_admin import SafetyAdminMixin
from common.admin_display import number_text, plain_list
from common.forms import LinesField
from fleet.reconcile import fleet_reconcile
from integrations.errors import IntegrationError


def _monitored_instance_errors(entry):
    return validation.monitored_instance_errors(
        [entry], networks=settings.MONITORED_NETWORKS, domains=settings.MONITORED_DOMAINS
    )


class AutoscalingConfigForm(forms.ModelForm):
    """The config's list of scrape targets edited one a line (the model keeps it as a JSON list)."""

    monitored_instances = LinesField(
        label=_("monitored instances"),
        entry_errors=_monitored_instance_errors,
        help_text=_(
            "host:port targets Prometheus scrapes for this service (node_exporter), one a line, e.g. 10.0.10.21:9100."
        ),
    )

    class Meta:
        model = AutoscalingConfig
        fields = ["monitored_instances"]  # the admin's fieldsets add the others


class IpPoolForm(forms.ModelForm):
    """The pool's DNS servers and excluded addresses edited one a line (the model keeps JSON lists)."""

    dns_servers = LinesField(
        label=_("DNS servers"),
        entry_errors=validation.ipv4_address_errors,
        rows=2,
        help_text=_("One IPv4 address a line."),
    )
    excluded_addresses = LinesField(
        label=_("excluded addresses"),
        entry_errors=validation.ipv4_address_errors,
        help_text=_("One IPv4 address a line, inside the range: never handed out."),
    )

    class Meta:
        model = IpPool
        fields = ["dns_servers", "excluded_addresses"]  # the admin's fieldsets add the others


def _pre(text):
    return format_html('<pre style="max-height:30em;overflow:auto;white-space:pre">{}</pre>', text)


class ServiceDeleteMixin:
    """Deleting through a service that may refuse (ConflictError): a refusal is shown as an error with the
    service's reason, and only a deletion that happened is logged and reported as done."""

    def service_delete(self, request, obj):
        raise NotImplementedError

    def _delete_one(self, request, obj):
        try:
            with transaction.atomic():
                # Logged first, as Django does (the entry needs the object's pk); a refusal rolls the entry back.
                super().log_deletions(request, [obj])
                self.service_delete(request, obj)
        except services.ConflictError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        return True

    def log_deletions(self, request, queryset):
        return []  # each deletion that happened is logged by _delete_one

    def delete_model(self, request, obj):
        self._delete_one(request, obj)

    def response_delete(self, request, obj_display, obj_id):
        if self.model._default_manager.filter(pk=obj_id).exists():  # refused: the error message says why
            opts = self.opts
            return HttpResponseRedirect(
                reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change",
                    args=[quote(obj_id)],
                    current_app=self.admin_site.name,
                )
            )
        return super().response_delete(request, obj_display, obj_id)

    @admin.action(permissions=["delete"], description=django_delete_selected.short_description)
    def delete_selected(self, request, queryset):
        """Django's confirmation page, then each object through the service; only what was deleted is counted."""
        if not request.POST.get("post"):
            return django_delete_selected(self, request, queryset)
        _objects, _counts, perms_needed, protected = self.get_deleted_objects(queryset, request)
        if protected:
            return django_delete_selected(self, request, queryset)  # the page that says what protects them
        if perms_needed:
            raise PermissionDenied
        deleted = sum(self._delete_one(request, obj) for obj in queryset)
        if deleted:
            self.message_user(
                request,
                gettext("Successfully deleted %(count)d %(items)s.")
                % {"count": deleted, "items": model_ngettext(self.opts, deleted)},
                messages.SUCCESS,
            )
        return None


@admin.register(AutoscalingConfig)
class AutoscalingConfigAdmin(ServiceDeleteMixin, SafetyAdminMixin, admin.ModelAdmin):
    form = AutoscalingConfigForm
    # What an operator looks for, in columns that fit 1,400 px: the rule, the fleet's size within its bounds and
    # whether the monitoring and Jenkins have what was saved.
    list_display = ["service_name", "enabled", "scaling_rule", "fleet_size", "template", "sync_status", "safety_status"]
    list_filter = ["enabled", "sync_state", "metric", "dry_run"]
    search_fields = ["service_name", "description", "f5_pool"]
    list_select_related = ["template", "ip_pool"]
    autocomplete_fields = []
    actions = [
        "delete_selected",
        "enable_configs",
        "disable_configs",
        "sync_now",
        "reconcile_fleet",
        "suspend_processes",
        "resume_processes",
        "resume_breaker",
    ]
    readonly_fields = [
        "sync_state",
        "synced_at",
        "synced_digest",
        "sync_error",
        "preview_rule",
        "preview_route",
        "preview_job",
        "fleet",
        "created_at",
        "updated_at",
        "safety",
    ]
    fieldsets = [
        (None, {"fields": ["service_name", "description", "template", "enabled", "dry_run"]}),
        (_("Fleet"), {"fields": ["fleet"]}),
        (_("Safety nets"), {"fields": ["safety"]}),
        (
            _("When to scale out"),
            {
                "description": _(
                    "Prometheus raises the alert when the metric stays above the threshold for the given time. "
                    "Leave the expression empty to use the default for the metric (node_exporter series)."
                ),
                "fields": ["metric", "threshold", "duration_seconds", "promql_expression", "monitored_instances"],
            },
        ),
        (
            _("How far"),
            {"fields": ["min_instances", "max_instances", "scale_out_step", "cooldown_seconds"]},
        ),
        (
            _("Scaling policy"),
            {
                "description": _(
                    "Step: each firing alert adds the VMs per scale-out. Target tracking: every evaluator pass reads "
                    "the metric's average and adds ceil(N × current / target) − N VMs in one event, at most the "
                    "maximum VMs per scale-out (0: no limit but the maximum instances)."
                ),
                "fields": ["policy_type", "target_value", "max_scale_out_step"],
            },
        ),
        (
            _("When to scale in"),
            {
                "description": _(
                    "Step: Prometheus raises a second alert when the metric stays below the scale-in threshold for "
                    "the scale-in duration (empty threshold: no scale-in). Target tracking: the evaluator removes a "
                    "VM when one fewer would still keep the duration's highest average at or below 0.9 × target. "
                    "Never below the minimum, never while a scale-out runs or its new VMs warm up (in service for "
                    "less than the cooldown); the scale-in cooldown is counted from the last scale-in only."
                ),
                "fields": [
                    "scale_in_threshold",
                    "scale_in_duration_seconds",
                    "scale_in_cooldown_seconds",
                    "scale_in_step",
                    "scale_in_order",
                    "drain_timeout_seconds",
                ],
            },
        ),
        (
            _("Where new VMs go"),
            {
                "description": _("vCenter placement of the clones; empty fields take the template's."),
                "fields": [
                    "datacenter",
                    "cluster",
                    "resource_pool",
                    "folder",
                    "datastore",
                    "network",
                    "vm_name_pattern",
                    "ip_pool",
                ],
            },
        ),
        (_("F5 load balancer"), {"fields": ["f5_pool", "f5_partition", "f5_member_port"]}),
        (
            _("Sync with Prometheus, Alertmanager and Jenkins"),
            {"fields": ["sync_state", "synced_at", "synced_digest", "sync_error"]},
        ),
        (
            _("What the portal pushes"),
            {
                "classes": ["collapse"],
                "description": _("Rendered from the saved config; credentials are masked."),
                "fields": ["preview_rule", "preview_route", "preview_job"],
            },
        ),
        (_("Record"), {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            # The fleet's size per row in the list's one query (the inventory relates to the config; the fleet
            # app sits above this one).
            states = self.model._meta.get_field("instances").related_model
            queryset = queryset.annotate(
                in_service_count=Count("instances", filter=Q(instances__state=states.State.IN_SERVICE)),
                creating_count=Count("instances", filter=Q(instances__state__in=states.CREATING_STATES)),
            )
        return queryset

    @admin.display(description=_("scaling rule"), ordering="threshold")
    def scaling_rule(self, obj):
        """ "CPU usage > 70%", and the scale-in side when the config has one."""
        text = gettext("scale out: %(metric)s > %(threshold)s%%") % {
            "metric": obj.get_metric_display(),
            "threshold": number_text(obj.threshold),
        }
        scale_in = getattr(obj, "scale_in_threshold", None)
        if scale_in is not None:
            text += "; " + gettext("scale in: < %(threshold)s%%") % {"threshold": number_text(scale_in)}
        return text

    @admin.display(description=_("instances"))
    def fleet_size(self, obj):
        """In service now, within the config's bounds; the ones being created under it."""
        size = format_html(
            '<span class="fleet-size" data-in-service="{}">{} <span class="fleet-bounds">({})</span>{}</span>',
            obj.in_service_count,
            obj.in_service_count,
            gettext("min %(min)d, max %(max)d") % {"min": obj.min_instances, "max": obj.max_instances},
            format_html(
                '<span class="fleet-creating">{}</span>',
                ngettext("%(count)d being created", "%(count)d being created", obj.creating_count)
                % {"count": obj.creating_count},
            )
            if obj.creating_count
            else "",
        )
        return size

    @admin.display(description=_("sync state"), ordering="sync_state")
    def sync_status(self, obj):
        """The state, when it was last pushed, and the start of the last error (the whole one is on the page)."""
        error = obj.sync_error or ""
        if len(error) > 80:
            error = error[:79] + "…"
        return format_html(
            '<span class="sync-state" data-state="{}" title="{}">{}{}{}</span>',
            obj.sync_state,
            obj.sync_error or "",
            obj.get_sync_state_display(),
            format_html(
                '<span class="sync-when">{}</span>', date_format(localtime(obj.synced_at), "SHORT_DATETIME_FORMAT")
            )
            if obj.synced_at
            else "",
            format_html('<span class="sync-error">{}</span>', error) if error else "",
        )

    @admin.display(description=_("instances"))
    def fleet(self, obj):
        """The service's inventory at a glance: how many instances in each state, and a link to the list."""
        if obj.pk is None:
            return "-"
        # Through the inventory's relation to the config (the fleet app sits above this one).
        states = obj.instances.model.State
        counts = dict(obj.instances.order_by().values("state").annotate(n=Count("pk")).values_list("state", "n"))
        url = reverse("admin:fleet_managedinstance_changelist") + f"?config__id__exact={obj.pk}"
        parts = format_html_join(
            ", ", "{}: {}", ((states(state).label, counts[state]) for state in states.values if state in counts)
        )
        return format_html(
            '{} <a href="{}">{}</a>', parts or gettext("no instances"), url, gettext("Show the instances")
        )

    def _previews(self, obj):
        if not obj or not obj.pk:
            return None
        cache = getattr(self, "_preview_cache", {})
        if cache.get("pk") != (obj.pk, obj.updated_at):
            cache = {"pk": (obj.pk, obj.updated_at), "data": services.config_previews(config=obj)}
            self._preview_cache = cache
        return cache["data"]

    @admin.display(description=_("Prometheus rule"))
    def preview_rule(self, obj):
        previews = self._previews(obj)
        return _pre(previews["rule"]) if previews else "-"

    @admin.display(description=_("Alertmanager route and receiver"))
    def preview_route(self, obj):
        previews = self._previews(obj)
        return _pre(previews["route"]) if previews else "-"

    @admin.display(description=_("Jenkins job"))
    def preview_job(self, obj):
        previews = self._previews(obj)
        return _pre(previews["job"]) if previews else "-"

    def save_model(self, request, obj, form, change):
        services.config_save(config=obj, user=request.user)

    # --- replay: what the saved policy (and the form's unsaved values) would have done --------------------------
    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/replay/", self.admin_site.admin_view(self.replay_view), name=f"{prefix}_replay"),
            *super().get_urls(),
        ]

    def _edited_values(self, request, config):
        """(overrides, form errors) from a POST: the change form's fields (its "Compare with replay" button), or
        the replay page's own hidden edited-<field> inputs (a new period for the same edit)."""
        if "_replay_compare" in request.POST:
            candidate = self.get_object(request, quote(config.pk))
            form = self.get_form(request, candidate, change=True)(request.POST, request.FILES, instance=candidate)
            if not form.is_valid():
                return None, [f"{form.fields[name].label if name in form.fields else name}: {' '.join(errors)}"
                              for name, errors in form.errors.items()]  # fmt: skip
            return {
                name: form.cleaned_data[name]
                for name in replay_service.POLICY_FIELDS
                if name in form.cleaned_data and form.cleaned_data[name] != getattr(config, name)
            }, []
        prefix = "edited-"
        return {
            key[len(prefix) :]: (value if value != "" else None)
            for key, value in request.POST.items()
            if key.startswith(prefix)
        }, []

    def replay_view(self, request, object_id):
        config = self.get_object(request, object_id)
        if config is None or not self.has_view_permission(request, config):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        period = data.get("replay_period") or replay_service.DEFAULT_PERIOD
        overrides, problems = self._edited_values(request, config) if request.method == "POST" else ({}, [])
        report = None
        if not problems:
            try:
                report = replay_service.config_replay(config=config, period=period, overrides=overrides or None)
            except ValidationError as exc:
                problems = [f"{name}: {' '.join(errors)}" for name, errors in exc.message_dict.items()]
            except IntegrationError as exc:
                problems = [gettext("Prometheus could not be read: %(error)s") % {"error": exc.message}]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": config,
            "title": gettext("Replay of “%(service)s”") % {"service": config.service_name},
            "periods": list(replay_service.PERIODS),
            "period": period,
            "overrides": overrides or {},
            "problems": problems,
            "report": report,
            "runs": replay_charts.runs(report, config) if report else [],
            "metric_chart": replay_charts.metric_chart(report, config) if report else "",
        }
        return TemplateResponse(request, "admin/autoscaling/autoscalingconfig/replay.html", context)

    def service_delete(self, request, obj):
        services.config_delete(config=obj, user=request.user)

    # The operator actions ask for the permissions the API asks for (access/roles.py).
    def has_enable_permission(self, request):
        return request.user.has_perm(roles.CONFIG_ENABLE)

    def has_sync_permission(self, request):
        return request.user.has_perm(roles.PROVISIONING_SYNC)

    def has_reconcile_permission(self, request):
        return request.user.has_perm(roles.CONFIG_RECONCILE)

    @admin.action(description=_("Enable autoscaling of the selected services"), permissions=["enable"])
    def enable_configs(self, request, queryset):
        done = 0
        for config in queryset:
            try:
                services.config_enable(config=config, user=request.user)
                done += 1
            except ValidationError as exc:
                reasons = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                self.message_user(
                    request,
                    _("%(service)s was not enabled: %(reasons)s")
                    % {"service": config.service_name, "reasons": reasons},
                    messages.ERROR,
                )
        if done:
            self.message_user(
                request, ngettext("%(count)d config enabled.", "%(count)d configs enabled.", done) % {"count": done}
            )

    @admin.action(description=_("Disable autoscaling of the selected services"), permissions=["enable"])
    def disable_configs(self, request, queryset):
        count = 0
        for config in queryset:
            services.config_disable(config=config, user=request.user)
            count += 1
        self.message_user(
            request, ngettext("%(count)d config disabled.", "%(count)d configs disabled.", count) % {"count": count}
        )

    @admin.action(description=_("Sync now with Prometheus, Alertmanager and Jenkins"), permissions=["sync"])
    def sync_now(self, request, queryset):
        services.provisioning_sync(reason="admin: sync now", user=request.user)
        self.message_user(request, _("A provisioning pass was requested; the sync state updates when it is done."))

    @admin.action(
        description=_("Reconcile fleet (compare the instances with vCenter and F5 now)"), permissions=["reconcile"]
    )
    def reconcile_fleet(self, request, queryset):
        result = fleet_reconcile(config_ids=list(queryset.values_list("pk", flat=True)), user=request.user)
        self.message_user(
            request,
            _(
                "Fleet reconciled: %(instances)d instances compared with %(vms)d VMs; %(lost)d lost, %(unhealthy)d "
                "unhealthy, %(healthy)d healthy."
            )
            % {
                "instances": result.instances,
                "vms": result.vms,
                "lost": result.lost,
                "unhealthy": result.unhealthy,
                "healthy": result.healthy,
            },
            messages.SUCCESS if result.ok else messages.WARNING,
        )
        for line in result.changes[:20]:
            self.message_user(request, line, messages.INFO)
        for error in result.errors:
            self.message_user(request, error, messages.ERROR)


class IpAllocationInline(admin.TabularInline):
    model = IpAllocation
    extra = 0
    can_delete = False
    fields = ["address", "state", "event", "vm_name", "note", "reserved_at", "released_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(IpPool)
class IpPoolAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    form = IpPoolForm
    list_display = ["name", "network", "first_address", "last_address", "gateway", "size", "used", "free"]
    actions = ["delete_selected"]
    search_fields = ["name", "network", "description"]
    readonly_fields = ["usage", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (
            _("Addresses"),
            {
                "description": _(
                    "The range must lie inside the network; the gateway must be outside the range. "
                    "Excluded addresses are never handed out."
                ),
                "fields": [
                    "network",
                    "first_address",
                    "last_address",
                    "gateway",
                    "dns_servers",
                    "excluded_addresses",
                    "ping_check",
                ],
            },
        ),
        (_("Usage"), {"fields": ["usage", "created_at", "updated_at"]}),
    ]
    inlines = [IpAllocationInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts()

    @admin.display(description=_("addresses"))
    def size(self, obj):
        return obj.usage["size"]

    @admin.display(description=_("used"), ordering="used_count")
    def used(self, obj):
        return obj.usage["used"]

    @admin.display(description=_("free"))
    def free(self, obj):
        return obj.usage["free"]

    @admin.display(description=_("usage"))
    def usage(self, obj):
        if not obj.pk:
            return "-"
        usage = services.ip_pool_usage(pool=obj)
        return (
            _("%(size)d addresses: %(in_use)d in use, %(reserved)d reserved, %(skipped)d skipped, %(free)d free")
            % usage
        )

    def save_model(self, request, obj, form, change):
        services.ip_pool_save(pool=obj, user=request.user)

    def service_delete(self, request, obj):
        services.ip_pool_delete(pool=obj, user=request.user)


@admin.register(IpAllocation)
class IpAllocationAdmin(admin.ModelAdmin):
    list_display = ["address", "pool", "state", "event", "vm_name", "reserved_at", "released_at"]
    list_filter = ["state", "pool"]
    search_fields = ["address", "vm_name", "note"]
    list_select_related = ["pool", "event"]
    readonly_fields = ["reserved_at", "updated_at"]
    raw_id_fields = ["event"]


@admin.register(ProvisioningRun)
class ProvisioningRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "requested_at",
        "status",
        "reason",
        "duration",
        "files",
        "jobs",
        "reloads_text",
        "ssh_round_trips",
        "drift_text",
    ]
    list_filter = ["status", "check_only"]
    search_fields = ["reason", "error"]
    # A pass is read only: its lists shown as lists, its diff as text.
    fields = readonly_fields = [
        "status",
        "reason",
        "check_only",
        "full_check",
        "merged_into",
        "requested_at",
        "started_at",
        "finished_at",
        "changed_files_list",
        "jenkins_changes_list",
        "drift_text",
        "reloads_text",
        "ssh_round_trips",
        "diff_text",
        "unmanaged_diff_text",
        "error",
    ]

    def _hidden(self, request):
        # The full files (secrets masked) are for administrators only.
        return set() if request.user.has_perm(roles.UNMANAGED_DIFF_VIEW) else {"unmanaged_diff_text"}

    def get_fields(self, request, obj=None):
        return [name for name in super().get_fields(request, obj) if name not in self._hidden(request)]

    def get_readonly_fields(self, request, obj=None):
        return [name for name in super().get_readonly_fields(request, obj) if name not in self._hidden(request)]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("seconds"))
    def duration(self, obj):
        value = obj.duration_seconds
        return f"{value:.2f}" if value is not None else "-"

    @admin.display(description=_("files"))
    def files(self, obj):
        return len(obj.changed_files or [])

    @admin.display(description=_("jobs"))
    def jobs(self, obj):
        return len(obj.jenkins_changes or [])

    @admin.display(description=_("reloads"))
    def reloads_text(self, obj):
        return plain_list(obj.reloads)

    @admin.display(description=_("drift"))
    def drift_text(self, obj):
        return plain_list(obj.drift)

    @admin.display(description=_("changed files"))
    def changed_files_list(self, obj):
        return plain_list(obj.changed_files)

    @admin.display(description=_("Jenkins changes"))
    def jenkins_changes_list(self, obj):
        return plain_list(obj.jenkins_changes)

    @admin.display(description=_("difference"))
    def diff_text(self, obj):
        return _pre(obj.diff) if obj.diff else "-"

    @admin.display(description=_("difference of the whole shared files"))
    def unmanaged_diff_text(self, obj):
        return _pre(obj.unmanaged_diff) if obj.unmanaged_diff else "-"
