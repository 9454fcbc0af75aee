"""The webhook's fast check (events.api.serializers.webhook_payload_accepted) against the serializer it stands in
for: whatever it accepts, the serializer accepts with the same status, group key and receiver; what Alertmanager
sends, it accepts."""

import copy
import json
import random

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from events.api.serializers import AlertmanagerWebhookSerializer, webhook_payload_accepted
from events.tests.conftest import PAYLOADS, firing_payload


def serializer_says(raw):
    try:
        payload = AlertmanagerWebhookSerializer().run_validation(raw)
    except ValidationError:
        return None
    return {"status": payload["status"], "groupKey": payload["groupKey"], "receiver": payload.get("receiver", "")}


def bodies():
    yield firing_payload("web")
    for path in sorted(PAYLOADS.glob("*.json")):
        body = json.loads(path.read_text())
        if isinstance(body, dict):
            yield body


# Values a field may be given instead of its own: other JSON types, edges of lengths and formats.
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    4,
    1.5,
    "",
    " ",
    "4",
    "firing",
    "resolved",
    "FIRING",
    "x" * 200,
    "x" * 201,
    "x" * 10000,
    "x" * 10001,
    " " * 10,
    "  padded  ",
    "abc123",
    "ABC123",
    "0" * 64,
    "0" * 65,
    "abc\n",
    "2026-12-01T10:00:00Z",
    "2026-12-01T10:00:00",
    "2026-12-01T10:00:00.123456789+09:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-12:00",
    "not a date",
    [],
    [1],
    {},
    {"a": "b"},
    {"a": 1},
    {"a": None},
    {"a": "x" * 10001},
]


def _set(body, path, value):
    """Set (or, for "<removed>", remove) the field at `path`; nothing when an earlier change left no such place."""
    target = body
    for key in path[:-1]:
        if not isinstance(target, dict | list) or (isinstance(target, list) and not target):
            return
        target = target[key] if isinstance(target, list) else target.get(key)
    if isinstance(target, dict):
        if value == "<removed>":
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value


def mutations(body, rng):
    """The body with one field (top level or of an alert) removed or given an odd value, then a few at a time."""
    paths = [(key,) for key in body] + [("alerts", 0, key) for key in body["alerts"][0]]
    paths += [("truncatedAlerts",), ("alerts", 0, "annotations"), ("alerts", 0, "generatorURL"), ("extra",)]
    for path in paths:
        for value in [*ODD_VALUES, "<removed>"]:
            mutated = copy.deepcopy(body)
            _set(mutated, path, value)
            yield mutated
    for _n in range(200):
        mutated = copy.deepcopy(body)
        for _k in range(3):
            _set(mutated, rng.choice(paths), rng.choice([*ODD_VALUES, "<removed>"]))
        yield mutated
    yield {**body, "alerts": []}
    yield {**body, "alerts": body["alerts"] * 1000}
    yield {**body, "alerts": body["alerts"] * 1001}
    yield {**body, "alerts": [*body["alerts"], "not an alert"]}


@pytest.mark.parametrize("zone", ["UTC", "Asia/Seoul", "America/Los_Angeles"])
def test_what_the_fast_check_accepts_the_serializer_accepts_alike(settings, zone):
    settings.TIME_ZONE = zone
    timezone.activate(zone)
    rng = random.Random(19)
    checked = taken = 0
    try:
        for body in bodies():
            assert webhook_payload_accepted(body) == serializer_says(body), body  # Alertmanager's own: the fast path
            for mutated in mutations(body, rng):
                fast = webhook_payload_accepted(mutated)
                checked += 1
                if fast is not None:
                    taken += 1
                    assert fast == serializer_says(mutated), mutated
    finally:
        timezone.deactivate()
    assert checked > 1000 and 0 < taken < checked
