"""Serializer fields every app's API may share."""

from django.utils import timezone
from django.utils.translation import get_language
from rest_framework import serializers

_LABELS = {}


def choice_label(choices, value):
    """The label of `value` among `choices` (a TextChoices class) in the active language; the value if unknown.

    What get_FOO_display gives, at a fraction of its cost on a page of rows: Django's translates every label of the
    field's choices for each row; this translates them once per language and process."""
    key = (choices, get_language())
    labels = _LABELS.get(key)
    if labels is None:
        labels = _LABELS[key] = {choice.value: str(choice.label) for choice in choices}
    return labels.get(value, value)


class ChoiceLabelField(serializers.CharField):
    """A choice's label in the reader's language (`status_display`), read-only: `source="get_status_display"`
    without its per-row cost (choice_label), nor DRF's inspection of the bound method on every row."""

    def __init__(self, choices, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)
        self.choices = choices

    def to_representation(self, value):
        return choice_label(self.choices, value)


def iso_datetime(value, zone):
    """What DRF's DateTimeField gives for `value` in `zone` (the current time zone: pass it once for a page of rows)
    with the default ISO 8601 format: None when empty, "Z" for UTC."""
    if not value:
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value, zone)
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
