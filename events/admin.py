"""Admin screens of the events app: scale-out events (list + live detail), notifications and decisions.

Everything here is read-only: events, notifications and decisions are written by the webhook, the pipeline's
callbacks and the portal's tasks, never edited by hand.
"""

import json
from urllib.parse import quote_plus

from django.contrib import admin
from django.db.models import Prefetch
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from autoscaling.models import AutoscalingConfig
from common.admin_display import number_text, plain_list
from common.pagination import HistoryPaginator
from common.serializers import choice_label
from events.models import AlertNotification, EvaluatorState, EventAction, ScaleOutEvent, ScalingDecision
from events.selectors import event_search_condition

STATUS_CLASSES = {
    "pending": "pending",
    "waiting": "pending",
    "triggered": "running",
    "running": "running",
    "succeeded": "ok",
    "failed": "bad",
    "rolled_back": "warn",
    "cancelled": "muted",
    "scale_out": "ok",
    "resolved": "muted",
    "duplicate": "muted",
    "unknown_service": "bad",
    "disabled": "warn",
    "cooldown": "warn",
    "at_max": "warn",
    "already_scaling": "warn",
    "skipped": "muted",
}


def badge(value, label):
    return format_html('<span class="ev-badge ev-{}">{}</span>', STATUS_CLASSES.get(value, "muted"), label)


def seconds_text(seconds):
    if seconds is None:
        return "-"
    if seconds < 60:
        return _("{seconds} s").format(seconds=f"{seconds:.1f}")
    minutes, rest = divmod(int(seconds), 60)
    return _("{minutes} min {seconds} s").format(minutes=minutes, seconds=rest)


# Stands for a service's name in the service filter's link pattern (letters only: urlencode leaves it as it is).
_SERVICE_MARK = "ServiceNameMarkQz"


class ServiceListFilter(admin.SimpleListFilter):
    """Services from the configs table (cheap), not a DISTINCT over every stored row."""

    title = _("service")
    parameter_name = "service"
    field = "service_name"
    # admin/filter.html, its items written at once (events/templatetags/event_admin.py): the same HTML.
    template = "admin/events/service_filter.html"

    def lookups(self, request, model_admin):
        return [(name, name) for name in AutoscalingConfig.objects.values_list("service_name", flat=True)]

    def choices(self, changelist):
        """SimpleListFilter.choices, with each service's link put into the page's link pattern instead of built
        again (a sorted urlencode of every parameter each, 500 for 500 services)."""
        pattern = changelist.get_query_string({self.parameter_name: _SERVICE_MARK})
        if changelist.add_facets or pattern.count(_SERVICE_MARK) != 1:
            yield from super().choices(changelist)
            return
        choices = super().choices(changelist)
        yield next(choices)  # "All"
        head, tail = pattern.split(_SERVICE_MARK)
        value = self.value()
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == str(lookup),
                "query_string": head + quote_plus(str(lookup)) + tail,
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ScaleOutEvent)
class ScaleOutEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "service_name",
        "status_badge",
        "action_label",
        "source_label",
        "vm_count",
        "build_link",
        "vms",
        "created_at",
        "finished_at",
        "duration",
    ]
    list_display_links = ["id", "service_name"]
    list_filter = [ServiceListFilter, "status", "action", "source", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["service_name"]
    search_help_text = _("An exact VM name or IP address, a build number, an event id or (part of) a service name.")
    list_per_page = 50
    # Counting a million rows costs more than the page: the full count is not shown, the filtered one is bounded.
    show_full_result_count = False
    paginator = HistoryPaginator
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "service_name",
                    "config",
                    "action",
                    "status_badge",
                    "source",
                    "requested_by",
                    "reason_text",
                ]
            },
        ),
        (_("Trigger"), {"fields": ["alert_name", "value", "alert_starts_at", "labels", "notification_link"]}),
        (
            _("Jenkins"),
            {"fields": ["jenkins_job", "jenkins_queue_id", "build_link", "trigger_attempts"]},
        ),
        (_("Result"), {"fields": ["vm_count", "vms", "failed_step", "error_text"]}),
        (_("Times"), {"fields": ["created_at", "triggered_at", "started_at", "finished_at", "duration"]}),
    ]
    readonly_fields = [
        "status_badge",
        "reason_text",
        "value",
        "labels",
        "notification_link",
        "build_link",
        "vms",
        "duration",
        "error_text",
    ]

    class Media:
        css = {"all": ["events/event_admin.css"]}
        js = ["events/event_detail.js"]

    # What the list's columns read: neither the stored build log nor the related user and config (a page of 50
    # rows was 100 model instances and every column's decoding).
    list_columns = [
        "id",
        "service_name",
        "status",
        "action",
        "source",
        "vm_count",
        "build_number",
        "build_url",
        "vm_names",
        "vm_ips",
        "created_at",
        "finished_at",
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            return queryset.only(*self.list_columns)
        return queryset.select_related("requested_by", "config")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(event_search_condition(search_term)), False

    @admin.display(description=_("operator's reason"))
    def reason_text(self, event):
        return event.reason_text

    @admin.display(description=_("error"))
    def error_text(self, event):
        return event.error_text

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, event):
        return format_html(
            '<span data-ev="status">{}</span>', badge(event.status, choice_label(ScaleOutEvent.Status, event.status))
        )

    # Labels translated once per language, not all of a field's choices for every row (common/serializers.py).
    @admin.display(description=_("action"), ordering="action")
    def action_label(self, event):
        return choice_label(ScaleOutEvent.Action, event.action)

    @admin.display(description=_("source"), ordering="source")
    def source_label(self, event):
        return choice_label(ScaleOutEvent.Source, event.source)

    @admin.display(description=_("build"), ordering="build_number")
    def build_link(self, event):
        if not event.build_number:
            return "-"
        if event.build_url:
            return format_html('<a href="{}" rel="noopener">#{}</a>', event.build_url, event.build_number)
        return f"#{event.build_number}"

    @admin.display(description=_("value"))
    def value(self, event):
        return number_text(event.alert_value)

    @admin.display(description=_("VM names and IPs"))
    def vms(self, event):
        """One VM a line, with its address: "web-003 (10.0.0.13)"."""
        names, ips = list(event.vm_names or []), list(event.vm_ips or [])
        if len(ips) > len(names):
            names += [""] * (len(ips) - len(names))
        ips += [""] * (len(names) - len(ips))
        return plain_list(f"{name} ({ip})" if name and ip else name or ip for name, ip in zip(names, ips, strict=True))

    @admin.display(description=_("duration"))
    def duration(self, event):
        if event.finished_at:
            return seconds_text((event.finished_at - event.created_at).total_seconds())
        return "-"

    @admin.display(description=_("alert labels"))
    def labels(self, event):
        return format_html("<pre>{}</pre>", json.dumps(event.alert_labels, indent=2, sort_keys=True))

    @admin.display(description=_("notification"))
    def notification_link(self, event):
        if not event.notification_id:
            return "-"
        url = reverse("admin:events_alertnotification_change", args=[event.notification_id])
        return format_html('<a href="{}">#{}</a>', url, event.notification_id)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        event = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if event is not None:
            actions = list(event.actions.all())
            extra_context.update(
                event=event,
                timeline=[{"action": action, "duration": seconds_text(action.duration_seconds)} for action in actions],
                api_url=reverse("event-detail", args=[event.pk]),
                badge_classes=json.dumps(STATUS_CLASSES),
            )
        return super().change_view(request, object_id, form_url, extra_context)


class DecisionInline(admin.TabularInline):
    model = ScalingDecision
    classes = ["no-row-title"]
    fields = ["outcome_badge", "reason_column", "alert_name", "fingerprint", "starts_at", "event_link"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("decision"))
    def outcome_badge(self, decision):
        return badge(decision.outcome, choice_label(ScalingDecision.Outcome, decision.outcome))

    @admin.display(description=_("reason"))
    def reason_column(self, decision):
        return decision.reason_text

    @admin.display(description=_("event"))
    def event_link(self, decision):
        return event_link(decision.event_id)


def event_link(event_id):
    if not event_id:
        return "-"
    return format_html('<a href="{}">#{}</a>', reverse("admin:events_scaleoutevent_change", args=[event_id]), event_id)


@admin.register(AlertNotification)
class AlertNotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "service_name", "status", "received_at", "decided_at", "outcomes"]
    list_filter = [
        ServiceListFilter,
        "status",
        ("received_at", admin.DateFieldListFilter),
        ("decided_at", admin.DateFieldListFilter),
    ]
    search_fields = ["service_name", "group_key"]
    show_full_result_count = False
    paginator = HistoryPaginator
    fields = [
        "service_name",
        "config",
        "status",
        "receiver",
        "group_key",
        "received_at",
        "decided_at",
        "payload_pretty",
    ]
    readonly_fields = ["payload_pretty"]
    inlines = [DecisionInline]

    class Media:
        css = {"all": ["events/event_admin.css"]}

    def get_queryset(self, request):
        queryset = (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch(
                    "decisions", queryset=ScalingDecision.objects.only("id", "notification_id", "outcome", "event_id")
                )
            )
        )
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("payload")
        return queryset

    @admin.display(description=_("decisions"))
    def outcomes(self, notification):
        if notification.decided_at is None:
            # Stored, its alerts not decided yet (the decider decides behind the webhook's answers).
            return badge("waiting", _("Waiting to be decided"))
        return format_html_join(
            " ",
            "{}",
            (
                (badge(d.outcome, choice_label(ScalingDecision.Outcome, d.outcome)),)
                for d in notification.decisions.all()
            ),
        )

    @admin.display(description=_("payload"))
    def payload_pretty(self, notification):
        return format_html("<pre>{}</pre>", json.dumps(notification.payload, indent=2))


@admin.register(ScalingDecision)
class ScalingDecisionAdmin(ReadOnlyAdmin):
    list_display = [
        "decided_at",
        "service_name",
        "outcome_badge",
        "reason_column",
        "alert_name",
        "event_column",
        "notification_column",
        "dry_run",
    ]
    list_filter = [ServiceListFilter, "outcome", ("decided_at", admin.DateFieldListFilter), "dry_run"]
    search_fields = ["service_name", "reason", "alert_name", "fingerprint"]
    show_full_result_count = False
    paginator = HistoryPaginator

    class Media:
        css = {"all": ["events/event_admin.css"]}

    @admin.display(description=_("decision"), ordering="outcome")
    def outcome_badge(self, decision):
        return badge(decision.outcome, choice_label(ScalingDecision.Outcome, decision.outcome))

    @admin.display(description=_("reason"), ordering="reason")
    def reason_column(self, decision):
        return decision.reason_text

    @admin.display(description=_("event"))
    def event_column(self, decision):
        return event_link(decision.event_id)

    @admin.display(description=_("notification"))
    def notification_column(self, decision):
        if not decision.notification_id:
            return "-"
        url = reverse("admin:events_alertnotification_change", args=[decision.notification_id])
        return format_html('<a href="{}">#{}</a>', url, decision.notification_id)


@admin.register(EventAction)
class EventActionAdmin(ReadOnlyAdmin):
    list_display = ["event", "step", "status", "started_at", "finished_at"]
    list_filter = ["step", "status"]
    list_select_related = ["event"]
    show_full_result_count = False
    paginator = HistoryPaginator

    def has_module_permission(self, request):
        # Steps are shown on their event's page; this list exists for links and searches only.
        return False


@admin.register(EvaluatorState)
class EvaluatorStateAdmin(ReadOnlyAdmin):
    """The evaluator's last pass (events/evaluator.py): when, how long, what it found and its last error."""

    list_display = ["__str__", "last_pass_at", "pass_seconds", "last_summary", "last_error", "owner_since"]

    @admin.display(description=_("last pass duration (s)"), ordering="last_pass_seconds")
    def pass_seconds(self, state):
        return number_text(state.last_pass_seconds)
