"""ORM queries compiled once and run again with new values (the webhook's decision path).

Building a queryset with a dozen subqueries and compiling it to SQL costs the webhook more CPU than PostgreSQL
spends running it (issue 19's profile: ~60 % of a notification's CPU). A `PreparedQuery` builds its queryset once
per thread and database with sentinel values, compiles it, and remembers where each sentinel landed among the SQL
parameters; each run puts the real values there, executes the same SQL and converts the rows with the compiled
query's own converters, so the result is exactly what `queryset.values()` returns.

The queryset must be a `.values(...)` query whose shape does not depend on the values (the values only fill
parameters); a sentinel that does not land among the parameters, or lands where a constant also is, is refused
when the query is compiled, so a mistake fails loudly at the first run and never gives a wrong answer.
"""

import threading
from datetime import UTC, datetime

from django.db import connections

# Sentinels no real value equals: a value per kind (the builder picks the one of its parameter's type).
SENTINEL_INT = -8_765_432_109
SENTINEL_TEXT = "\x01prepared-sentinel-{name}\x01"
SENTINEL_DATETIME = datetime(1901, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC)


class PreparedQuery:
    """`build(**values)` returns a `.values()` queryset; `kinds` names each value's kind ("int", "text",
    "datetime"). `rows(**values)` returns its rows as dicts."""

    def __init__(self, build, **kinds):
        self._build = build
        self._kinds = kinds
        self._local = threading.local()

    def rows(self, using="default", **values):
        compiled = getattr(self._local, using, None)
        if compiled is None:
            compiled = self._compile(using)
            setattr(self._local, using, compiled)
        compiler, sql, template, slots, names = compiled
        params = list(template)
        for index, name, adapt in slots:
            params[index] = adapt(values[name])
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            fetched = cursor.fetchall()
        return [dict(zip(names, row, strict=True)) for row in compiler.results_iter(results=[fetched])]

    def first(self, using="default", **values):
        found = self.rows(using, **values)
        return found[0] if found else None

    def _compile(self, using):
        connection = connections[using]
        sentinels = {name: _sentinel(kind, name) for name, kind in self._kinds.items()}
        queryset = self._build(**sentinels)
        query = queryset.query
        compiler = query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        names = (
            list(query.selected)
            if query.selected
            else [*query.extra_select, *query.values_select, *query.annotation_select]
        )
        slots = []
        for name, kind in self._kinds.items():
            adapt = _adapter(kind, connection)
            wanted = adapt(sentinels[name])
            found = [index for index, param in enumerate(params) if _same(param, wanted)]
            if not found:
                raise ValueError(f"prepared query: the value {name!r} is not a parameter of the compiled SQL")
            slots += [(index, name, adapt) for index in found]
        return compiler, sql, tuple(params), slots, names


def _sentinel(kind, name):
    if kind == "int":
        return SENTINEL_INT - len(name)  # one per name, so two int values never share a slot
    if kind == "text":
        return SENTINEL_TEXT.format(name=name)
    if kind == "datetime":
        return SENTINEL_DATETIME.replace(microsecond=SENTINEL_DATETIME.microsecond + len(name))
    raise ValueError(f"prepared query: unknown kind {kind!r}")


def _adapter(kind, connection):
    if kind == "datetime":
        return connection.ops.adapt_datetimefield_value
    return lambda value: value


def _same(param, wanted):
    return type(param) is type(wanted) and param == wanted
