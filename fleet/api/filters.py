import django_filters
from django.utils.translation import gettext_lazy as _

from fleet.models import ManagedInstance


class ManagedInstanceFilter(django_filters.FilterSet):
    service = django_filters.CharFilter(field_name="config__service_name", label=_("service"))
    state = django_filters.MultipleChoiceFilter(choices=ManagedInstance.State.choices, label=_("state"), distinct=False)
    health = django_filters.ChoiceFilter(choices=ManagedInstance.Health.choices, label=_("health"))
    origin = django_filters.ChoiceFilter(choices=ManagedInstance.Origin.choices, label=_("origin"))

    class Meta:
        model = ManagedInstance
        fields = ["service", "state", "health", "origin", "created_by_event"]
