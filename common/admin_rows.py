"""The rows of an admin change list, as Django's `result_list` renders them, with the per-column work done once.

Django's `items_for_result` (django/contrib/admin/templatetags/admin_list.py) resolves every column again for
every row: the model field lookup (a FieldDoesNotExist raised and caught for each method column), the empty value,
the cell's classes, and for each link column a `reverse()` and a `resolve()` of the row's change URL. On a page of
50 events x 11 columns that was half the CPU of the admin's event list. Here a column is resolved once per page
and a row's change URL is the page's URL pattern with the row's primary key put in; each value is still shown by
Django's own `display_for_field` / `display_for_value` and the admin's display methods, so a cell's HTML is the
same (events/tests/test_admin.py compares the two, cell by cell). A change list this does not cover (editable
rows, a popup, a primary key that is not an integer) takes Django's path.
"""

import datetime

from django.contrib.admin.templatetags.admin_list import (
    ResultList,
    _coerce_field_name,
    result_headers,
    result_hidden_fields,
    results,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName,
    _get_non_gfk_field,
    display_for_field,
    display_for_value,
    lookup_field,
)
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.urls import NoReverseMatch
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

# Stands for the primary key in the page's change URL pattern (digits only: quoting leaves it as it is).
_PK_MARK = "9081726354453627189"


class _Row:
    """The object whose change URL is the page's pattern: only its primary key is read (ChangeList.url_for_result)."""

    def __init__(self, pk_attname):
        setattr(self, pk_attname, _PK_MARK)


def _change_url_pattern(cl):
    """The change URL of a row, preserved filters included, with _PK_MARK for its primary key; None if the
    admin has no change view to link to or the pattern would be ambiguous."""
    try:
        url = cl.url_for_result(_Row(cl.pk_attname))
    except NoReverseMatch:
        return None
    url = add_preserved_filters({"preserved_filters": cl.preserved_filters, "opts": cl.opts}, url)
    return url if url.count(_PK_MARK) == 1 else None


class _Column:
    """What items_for_result works out for one column, independent of the row."""

    def __init__(self, cl, index, name, first_link):
        """`first_link`: no column before this one is a link (items_for_result's `first`)."""
        model_admin = cl.model_admin
        self.name = name
        self.empty = model_admin.get_empty_value_display()
        self.classes = [f"field-{_coerce_field_name(name, index)}"]
        self.link = cl.list_display_links is not None and (
            (first_link and not cl.list_display_links) or name in cl.list_display_links
        )
        # lookup_field's resolution, once: a model field, or a ModelAdmin method; anything else per row.
        self.method = None
        try:
            self.field = _get_non_gfk_field(cl.lookup_opts, name)
        except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
            self.field = None
            if not callable(name) and name != "__str__" and callable(getattr(model_admin, name, None)):
                self.method = getattr(model_admin, name)
            attr = self.method
            if isinstance(name, str) and hasattr(model_admin.model, name):
                attr = getattr(model_admin.model, name)
            self.attr = attr
            self.generic = self.method is None
        else:
            self.attr = None
            self.generic = False
        field = self.field
        self.plain = field is None or field.auto_created
        if self.plain and name == "action_checkbox":
            self.classes = ["action-checkbox"]
        if not self.generic:
            self.empty_shown = getattr(self.attr, "empty_value_display", self.empty)
            self.boolean = getattr(self.attr, "boolean", False)
            if isinstance(self.attr, property) and hasattr(self.attr, "fget"):
                self.boolean = getattr(self.attr.fget, "boolean", False)
            self.many_to_one = field is not None and isinstance(field.remote_field, models.ManyToOneRel)
            if not self.plain and isinstance(field, (models.DateField, models.TimeField, models.ForeignKey)):
                self.classes.append("nowrap")

    def shown(self, result, model_admin):
        """(result_repr, row_class) of this column's cell, as items_for_result gives them."""
        classes = self.classes
        if self.generic:
            return self._generic(result, model_admin)
        try:
            value = self.method(result) if self.method is not None else getattr(result, self.name)
        except ObjectDoesNotExist:
            return self.empty, classes
        if isinstance(value, str) and value.strip() == "":
            value = ""
        empty = self.empty_shown
        if self.plain:
            if isinstance(value, (datetime.date, datetime.time)):
                classes = [*classes, "nowrap"]
            return display_for_value(value, empty, self.boolean), classes
        if self.many_to_one:
            related = getattr(result, self.field.name)
            return (empty if related is None else related), classes
        return display_for_field(value, self.field, empty, avoid_link=self.link), classes

    def _generic(self, result, model_admin):
        classes = self.classes
        try:
            field, attr, value = lookup_field(self.name, result, model_admin)
        except ObjectDoesNotExist:
            return self.empty, classes
        empty = getattr(attr, "empty_value_display", self.empty)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        boolean = getattr(attr, "boolean", False)
        if isinstance(attr, property) and hasattr(attr, "fget"):
            boolean = getattr(attr.fget, "boolean", False)
        if isinstance(value, (datetime.date, datetime.time)):
            classes = [*classes, "nowrap"]
        return display_for_value(value, empty, boolean), classes


def _fast_results(cl):
    if cl.formset or cl.is_popup or not isinstance(cl.lookup_opts.pk, models.IntegerField):
        return None
    url = _change_url_pattern(cl)
    if url is None:
        return None
    head, tail = (conditional_escape(part) for part in url.split(_PK_MARK))
    columns, link_tags = [], {}
    for index, name in enumerate(cl.list_display):
        column = _Column(cl, index, name, not link_tags)
        if column.link:
            link_tags[column] = "td" if link_tags else "th"
        columns.append(column)
    model_admin, pk_attname = cl.model_admin, cl.pk_attname
    rows = []
    for result in cl.result_list:
        href = f"{head}{getattr(result, pk_attname)}{tail}"
        cells = []
        for column in columns:
            result_repr, classes = column.shown(result, model_admin)
            row_class = f' class="{" ".join(classes)}"'
            shown = conditional_escape(result_repr)
            tag = link_tags.get(column)
            if tag is None:
                cells.append(mark_safe(f"<td{row_class}>{shown}</td>"))
            else:
                cells.append(mark_safe(f'<{tag}{row_class}><a href="{href}">{shown}</a></{tag}>'))
        rows.append(ResultList(None, cells))
    return rows


def result_list(cl):
    """The context of admin/change_list_results.html: what Django's `result_list` tag gives, rows included."""
    headers = list(result_headers(cl))
    rows = _fast_results(cl)
    return {
        "cl": cl,
        "result_hidden_fields": list(result_hidden_fields(cl)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for header in headers if header["sortable"] and header["sorted"]),
        "results": rows if rows is not None else list(results(cl)),
    }
