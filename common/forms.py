"""Form fields of the admin that a person edits without knowing JSON."""

import contextlib
import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class LinesField(forms.Field):
    """A list of strings (a model's JSON list) edited as text, one entry per line.

    Blank lines and the spaces around an entry do not count. `entry_errors(entry)` returns the messages for one
    entry (none when it is valid); every wrong line is reported at once, each with its line number, and so is an
    entry given twice. The value is the list of entries, in their order. A JSON list of strings (what the field
    showed before, what a script may post) is taken as its entries, one a line.
    """

    widget = forms.Textarea

    def __init__(self, *, entry_errors=None, rows=4, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.entry_errors = entry_errors
        self.widget.attrs.update({"rows": rows, "cols": 40, "spellcheck": "false", "autocomplete": "off"})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(entry) for entry in value)
        return value  # the text as typed, shown again with its errors

    @staticmethod
    def numbered(value):
        """[(line number, entry)] of the non-blank lines."""
        if isinstance(value, str) and value.strip().startswith("["):
            with contextlib.suppress(ValueError):
                parsed = json.loads(value)
                if isinstance(parsed, list) and all(isinstance(entry, str) for entry in parsed):
                    value = parsed
        if isinstance(value, list | tuple):
            lines = [str(entry) for entry in value]
        else:
            lines = str(value or "").splitlines()
        return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]

    def to_python(self, value):
        return [entry for _number, entry in self.numbered(value)]

    def clean(self, value):
        entries = self.numbered(value)
        if self.required and not entries:
            raise ValidationError(self.error_messages["required"], code="required")
        errors = []
        first_seen = {}
        for number, entry in entries:
            for message in self.entry_errors(entry) if self.entry_errors else ():
                errors.append(line_error(number, message))
            if entry in first_seen:
                errors.append(
                    line_error(
                        number,
                        gettext("%(value)s is already on line %(first)d.")
                        % {"value": entry, "first": first_seen[entry]},
                    )
                )
            first_seen.setdefault(entry, number)
        if errors:
            raise ValidationError(errors)
        return [entry for _number, entry in entries]

    def has_changed(self, initial, data):
        return list(initial or []) != self.to_python(data)


def line_error(number, message):
    return ValidationError(
        _("Line %(number)d: %(message)s"), code="invalid_line", params={"number": number, "message": message}
    )
