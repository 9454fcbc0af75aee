"""How the admin shows stored values: numbers rounded, lists as lists. Pure helpers for `@admin.display` methods."""

from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join


def number_text(value, *, decimals=2):
    """A stored number (a float, or text such as Alertmanager's "85.00196249999999") rounded for people:
    at most `decimals` decimals ("85", "85.5", "85.46"), in the reader's locale. Text that is no number is shown
    as it is; nothing is "-"."""
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number or number in (float("inf"), float("-inf")):
        return str(value)
    rounded = round(number, decimals)
    if rounded == int(rounded):
        rounded = int(rounded)  # 85.0019 -> "85", not "85.00"
    return number_format(rounded)


def plain_list(values):
    """A list as a list (one item a line), not as JSON; an empty one is "-"."""
    values = [value for value in (values or []) if value not in (None, "")]
    if not values:
        return "-"
    return format_html('<ul class="plain-list">{}</ul>', format_html_join("", "<li>{}</li>", ((v,) for v in values)))
