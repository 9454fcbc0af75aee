"""Pages of long histories (events, notifications, decisions) whose count does not read every matching row.

An exact COUNT(*) over a million events costs more than the page itself. The count here is exact up to
`EXACT_COUNT_LIMIT` matching rows (it reads at most that many index entries); beyond it, on PostgreSQL, it is the
planner's estimate of the matching rows (EXPLAIN, no rows read), never below the limit. SQLite counts exactly.
"""

import json
from functools import cached_property

from django.core.paginator import Paginator
from django.db import connections
from django.utils.translation import gettext as _
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

EXACT_COUNT_LIMIT = 10_000


def bounded_count(queryset, *, limit=None):
    """(count, exact): the exact number of rows up to `limit` (EXACT_COUNT_LIMIT), else PostgreSQL's estimate (at
    least limit + 1)."""
    limit = EXACT_COUNT_LIMIT if limit is None else limit
    queryset = queryset.order_by()
    counted = queryset[: limit + 1].count()
    if counted <= limit:
        return counted, True
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return queryset.count(), True
    sql, params = queryset.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return max(int(plan[0]["Plan"]["Plan Rows"]), limit + 1), False


class HistoryPaginator(Paginator):
    """A paginator whose count is `bounded_count`: exact for up to EXACT_COUNT_LIMIT rows, then an estimate.

    With an estimate the last page numbers are approximate: a page past the real end is empty (the API answers 404,
    the admin its "invalid page" notice); narrowing the filter makes the count exact again."""

    @cached_property
    def _bounded(self):
        if not hasattr(self.object_list, "query"):
            return len(self.object_list), True
        return bounded_count(self.object_list)

    @cached_property
    def count(self):
        return self._bounded[0]

    @property
    def count_is_exact(self):
        return self._bounded[1]


class HistoryPagination(PageNumberPagination):
    """Page-number pages (`page`, `page_size` up to 200) with a bounded count and `count_exact`."""

    django_paginator_class = HistoryPaginator
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.page.paginator.count,
                "count_exact": self.page.paginator.count_is_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = _(
            "Exact up to %(limit)s matching rows; beyond that the database's estimate (count_exact false)."
        ) % {"limit": f"{EXACT_COUNT_LIMIT:,}"}
        response["properties"]["count_exact"] = {"type": "boolean", "example": True}
        response["required"] = [*response.get("required", []), "count_exact"]
        return response
