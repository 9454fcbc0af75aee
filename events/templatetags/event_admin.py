from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.template.loader import get_template
from django.utils.encoding import iri_to_uri
from django.utils.html import conditional_escape, escape
from django.utils.safestring import mark_safe

from common import admin_rows

register = template.Library()


@register.tag(name="result_list_rows")
def result_list_rows_tag(parser, token):
    """Django's {% result_list cl %} (the same template and context), its rows built by common/admin_rows.py."""
    return InclusionAdminNode(
        parser, token, func=admin_rows.result_list, template_name="change_list_results.html", takes_context=False
    )


@register.simple_tag
def filter_with_choices(title, choices, spec):
    """admin/filter.html for a filter of many choices (the service filter: one per service): the template rendered
    without its items, which are then written in at once (its loop took a fifth of the event list's CPU with 200
    services). The same HTML, whitespace included; the template as it is if its list is not where expected."""
    template = get_template("admin/filter.html")
    empty = template.render({"title": title, "choices": [], "spec": spec})
    if empty.count(_EMPTY_LIST) != 1:
        return template.render({"title": title, "choices": choices, "spec": spec})
    items = "".join(
        '\n    <li{}>\n    <a href="{}">{}</a></li>\n  '.format(
            ' class="selected"' if choice["selected"] else "",
            escape(iri_to_uri(choice["query_string"])),
            conditional_escape(choice["display"]),
        )
        for choice in choices
    )
    return mark_safe(empty.replace(_EMPTY_LIST, f"<ul>\n  {items}\n  </ul>"))


# What admin/filter.html's list is without items.
_EMPTY_LIST = "<ul>\n  \n  </ul>"
