import django_filters
from django.utils.translation import gettext_lazy as _

from access.api.serializers import ACTION_NAMES
from access.models import AuditEntry


class AuditEntryFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor__username", label=_("user name"))
    door = django_filters.ChoiceFilter(choices=AuditEntry.Door.choices, label=_("door"))
    action = django_filters.ChoiceFilter(
        choices=[(name, name) for name in ACTION_NAMES.values()], method="filter_action", label=_("action")
    )
    operation = django_filters.CharFilter(label=_("operator action"))
    model = django_filters.CharFilter(method="filter_model", label=_('"app_label.model", e.g. autoscaling.ippool'))
    object_pk = django_filters.CharFilter(label=_("the object's id"))
    since = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte", label=_("at or after"))
    until = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt", label=_("before"))

    class Meta:
        model = AuditEntry
        fields = ["actor", "door", "action", "operation", "model", "object_pk", "since", "until"]

    def filter_action(self, queryset, name, value):
        number = {text: number for number, text in ACTION_NAMES.items()}[value]
        return queryset.filter(action=number)

    def filter_model(self, queryset, name, value):
        app_label, _sep, model = value.lower().partition(".")
        return queryset.filter(content_type__app_label=app_label, content_type__model=model)
