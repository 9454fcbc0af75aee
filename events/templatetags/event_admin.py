from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode

from common import admin_rows

register = template.Library()


@register.tag(name="result_list_rows")
def result_list_rows_tag(parser, token):
    """Django's {% result_list cl %} (the same template and context), its rows built by common/admin_rows.py."""
    return InclusionAdminNode(
        parser, token, func=admin_rows.result_list, template_name="change_list_results.html", takes_context=False
    )
