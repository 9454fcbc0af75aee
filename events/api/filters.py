import django_filters
from django.utils.translation import gettext_lazy as _

from common.filters import IsoDateTimeFilter
from events.api.serializers import ALERT_STATUS_CHOICES
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from events.selectors import EventHasVm


class ScaleOutEventFilter(django_filters.FilterSet):
    service = django_filters.CharFilter(field_name="service_name", label=_("service"))
    status = django_filters.MultipleChoiceFilter(
        choices=ScaleOutEvent.Status.choices, label=_("status"), distinct=False
    )
    source = django_filters.ChoiceFilter(choices=ScaleOutEvent.Source.choices, label=_("source"))
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label=_("from"))
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label=_("until"))
    build_number = django_filters.NumberFilter(field_name="build_number")
    vm = django_filters.CharFilter(
        method="filter_vm",
        max_length=80,
        label=_("VM name or IP"),
        help_text=_("The events that created or removed a VM of this exact name or IP address (indexed)."),
    )

    class Meta:
        model = ScaleOutEvent
        fields = ["service", "status", "source", "created_after", "created_before", "build_number", "vm"]

    def filter_vm(self, queryset, name, value):
        return queryset.filter(EventHasVm(value.strip())) if value.strip() else queryset


class AlertNotificationFilter(django_filters.FilterSet):
    service = django_filters.CharFilter(field_name="service_name", label=_("service"))
    status = django_filters.ChoiceFilter(choices=ALERT_STATUS_CHOICES)
    received_after = IsoDateTimeFilter(field_name="received_at", lookup_expr="gte", label=_("from"))
    received_before = IsoDateTimeFilter(field_name="received_at", lookup_expr="lt", label=_("until"))

    class Meta:
        model = AlertNotification
        fields = ["service", "status", "received_after", "received_before"]


class ScalingDecisionFilter(django_filters.FilterSet):
    service = django_filters.CharFilter(field_name="service_name", label=_("service"))
    outcome = django_filters.MultipleChoiceFilter(choices=ScalingDecision.Outcome.choices, distinct=False)
    decided_after = IsoDateTimeFilter(field_name="decided_at", lookup_expr="gte", label=_("from"))
    decided_before = IsoDateTimeFilter(field_name="decided_at", lookup_expr="lt", label=_("until"))
    dry_run = django_filters.BooleanFilter(label=_("dry run"))

    class Meta:
        model = ScalingDecision
        fields = ["service", "outcome", "notification", "event", "decided_after", "decided_before", "dry_run"]
