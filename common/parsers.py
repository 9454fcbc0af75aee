"""The API's one JSON parser: it refuses, as a 400, what no field of the portal can hold.

Python's json module accepts `1e400` (as inf), `NaN` and `Infinity` (not JSON at all), NUL characters and lone
surrogates (which neither PostgreSQL's text and jsonb nor UTF-8 can store), integers no column holds, and nesting
until the interpreter's recursion limit. Refusing them here, once, keeps every view, serializer and JSON column
from seeing them.
"""

import json
import math
import re

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# A NUL or a lone surrogate (a surrogate pair decodes to one character outside this range).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In JSON text they can only come escaped: the parser refuses a raw control character, UTF-8 a raw surrogate.
ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
# Far deeper than any body the portal takes (an Alertmanager notification is 4 levels deep).
MAX_DEPTH = 32
# The database's largest integer (a bigint): a larger one could only fail on its way into a column.
LARGEST_INTEGER = 2**63 - 1


class BodyRefused(ValueError):
    """What is wrong with the body, as a message for the caller."""


def _constant(name):
    raise BodyRefused(_("%(value)s is not a JSON number; send a finite number.") % {"value": name})


def _number(text):
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused(_("The number %(value)s is too large; send a finite number.") % {"value": text[:40]})
    return value


def _integer(text):
    value = int(text)
    if not -LARGEST_INTEGER <= value <= LARGEST_INTEGER:
        raise BodyRefused(
            _("The number %(value)s is too large; no field holds more than 64 bits.") % {"value": text[:40]}
        )
    return value


def _path(parts):
    return ".".join(str(part) for part in parts) or _("the body")


def _check(value, max_depth, *, strings):
    """Walk the parsed body without recursion: its depth, and with `strings` its keys and texts too."""
    stack = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            items = item.items()
        elif isinstance(item, list):
            items = enumerate(item)
        else:
            if isinstance(item, str) and UNSTORABLE.search(item):
                raise BodyRefused(
                    _("The text at %(path)s contains a NUL character or a lone surrogate; remove it.")
                    % {"path": _path(path)}
                )
            continue
        if depth > max_depth:
            raise BodyRefused(
                _("The body is nested deeper than %(max)d levels (at %(path)s).")
                % {"max": max_depth, "path": _path(path)}
            )
        for key, child in items:
            if strings and isinstance(key, str) and UNSTORABLE.search(key):
                raise BodyRefused(
                    _("A key at %(path)s contains a NUL character or a lone surrogate; remove it.")
                    % {"path": _path(path) if path else _("the top level")}
                )
            if strings or isinstance(child, dict | list):
                stack.append((child, depth + 1, (*path, key)))


def loads(text, *, max_depth=MAX_DEPTH):
    """JSON text as Python values, or BodyRefused saying what is wrong (also for malformed JSON)."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_number, parse_int=_integer)
    except RecursionError:
        raise BodyRefused(_("The body is nested deeper than %(max)d levels.") % {"max": max_depth}) from None
    except (ValueError, UnicodeDecodeError) as exc:  # BodyRefused is a ValueError too
        if isinstance(exc, BodyRefused):
            raise
        raise BodyRefused(_("Malformed JSON: %(error)s") % {"error": exc}) from None
    # Cheap bounds first (the webhook is the portal's hottest path): fewer brackets than levels cannot nest too
    # deep, and text without such an escape holds no NUL or surrogate.
    strings = bool(ESCAPED_UNSTORABLE.search(text))
    if strings or text.count("[") + text.count("{") > max_depth:
        _check(value, max_depth, strings=strings)
    return value


class StrictJSONParser(JSONParser):
    """REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]: DRF's JSON parser with the refusals above (400 parse_error)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
        except UnicodeDecodeError as exc:
            raise ParseError(
                _("The body is not %(encoding)s text: %(error)s") % {"encoding": encoding, "error": exc}
            ) from None
        try:
            return loads(text)
        except BodyRefused as exc:
            raise ParseError(str(exc)) from None
