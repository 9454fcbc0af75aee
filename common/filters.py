"""The API's list filters that every app shares."""

from datetime import timedelta

import django_filters
from django import forms
from django.utils.translation import gettext_lazy as _
from django_filters.fields import IsoDateTimeField

# PostgreSQL (and ISO 8601 in practice) knows UTC offsets up to 15:59; the zones in use end at +14:00.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


class BoundedIsoDateTimeField(IsoDateTimeField):
    default_error_messages = {
        "invalid": _("Enter an ISO 8601 date and time, e.g. 2026-01-01T00:00:00Z."),
        "offset": _("The UTC offset %(offset)s is out of range; use one from -15:59 to +15:59, e.g. Z or +09:00."),
    }

    def to_python(self, value):
        value = super().to_python(value)
        offset = value.utcoffset() if value is not None else None
        if offset is not None and abs(offset) > MAX_UTC_OFFSET:
            minutes = int(abs(offset).total_seconds()) // 60
            text = f"{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
            raise forms.ValidationError(self.error_messages["offset"], code="offset", params={"offset": text})
        return value


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time filter that answers 400 for an offset beyond +-15:59 (the database would fail)."""

    field_class = BoundedIsoDateTimeField
