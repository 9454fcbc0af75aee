"""No 500 on any input: bodies no field can hold and filters the database cannot take answer 4xx JSON, store nothing.

The one JSON parser (common/parsers.py) refuses non-finite and oversized numbers, NUL characters and lone
surrogates, and deep nesting; the one date-time filter (common/filters.py) refuses UTC offsets beyond +-15:59.
"""

import hashlib
import json

import pytest

from autoscaling.models import AutoscalingConfig, IpAllocation, IpPool
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from lab.payloads import firing_notification
from templates_app.models import VMTemplate
from tests.test_api_errors import assert_error

pytestmark = pytest.mark.django_db
WEBHOOK_TOKEN = "bad-input-webhook-token"
CALLBACK_TOKEN = "bad-input-callback-token"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def config(settings):
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN
    template = VMTemplate.objects.create(name="tpl-bad-input", status=VMTemplate.Status.READY)
    pool = IpPool.objects.create(
        name="bad-input", network="127.78.0.0/24", first_address="127.78.0.10", last_address="127.78.0.29"
    )
    return AutoscalingConfig.objects.create(
        service_name="web", template=template, enabled=True, ip_pool=pool, max_instances=4, scale_out_step=2
    )


@pytest.fixture
def event(config):
    event = ScaleOutEvent.objects.create(
        config=config, service_name="web", jenkins_job="vmautoscale-web", status=ScaleOutEvent.Status.RUNNING
    )
    ScaleOutEvent.objects.filter(pk=event.pk).update(
        callback_token_hash=hashlib.sha256(CALLBACK_TOKEN.encode()).hexdigest()
    )
    return event


def webhook(client, text):
    return client.post(
        "/api/webhook/autoscale/web",
        data=text,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {WEBHOOK_TOKEN}",
    )


def body_with(**extra):
    body = firing_notification("web")
    body.update(extra)
    return body


def assert_nothing_stored():
    assert not AlertNotification.objects.exists()
    assert not ScalingDecision.objects.exists()
    assert not ScaleOutEvent.objects.exclude(status=ScaleOutEvent.Status.RUNNING).exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (json.dumps(body_with(extra={"load": 1})).replace('"load": 1', '"load": 1e400'), "too large"),
        (json.dumps(body_with(extra={"load": 1})).replace('"load": 1', '"load": -1e400'), "too large"),
        (json.dumps(body_with(extra={"load": 1})).replace('"load": 1', '"load": NaN'), "NaN"),
        (json.dumps(body_with(extra={"load": 1})).replace('"load": 1', '"load": Infinity'), "Infinity"),
        (json.dumps(body_with(extra={"load": 1})).replace('"load": 1', '"load": ' + "9" * 30), "64 bits"),
        (json.dumps(body_with(extra="a\u0000b")), "NUL"),
        (json.dumps(body_with(extra="\ud800")), "surrogate"),
        (json.dumps(body_with()).replace('"service"', '"serv\\u0000ice"', 1), "NUL"),
        (DEEP, "nested deeper"),
        # 33 levels of arrays inside the body: one level more than the parser takes.
        (json.dumps(body_with(extra=json.loads("[" * 32 + "1" + "]" * 32))), "nested deeper"),
    ],
    ids=["1e400", "-1e400", "NaN", "Infinity", "huge-int", "nul-value", "surrogate", "nul-label-name", "deep", "33"],
)
def test_the_webhook_refuses_what_no_field_can_hold(client, config, text, reason):
    response = webhook(client, text)
    body = assert_error(response, 400, "parse_error")
    assert reason in body["detail"], body
    assert_nothing_stored()


def test_the_same_body_without_the_bad_value_is_stored(client, config):
    response = webhook(client, json.dumps(body_with(extra={"load": 1.5})))
    assert response.status_code == 202, response.content
    assert AlertNotification.objects.get().payload["extra"] == {"load": 1.5}


def test_unknown_webhook_fields_are_stored_only_while_small(client, config):
    small = body_with(proxy="p" * 100)
    assert webhook(client, json.dumps(small)).status_code == 202
    assert AlertNotification.objects.get().payload["proxy"] == "p" * 100
    AlertNotification.objects.all().delete()

    big = body_with(proxy="p" * 10_000)
    big["alerts"][0]["extra"] = "q" * 5000
    assert webhook(client, json.dumps(big)).status_code == 202
    stored = AlertNotification.objects.get().payload
    assert "proxy" not in stored and "extra" not in stored["alerts"][0]
    assert stored["portal_dropped_fields"]["names"] == ["proxy", "alerts.0.extra"]
    assert stored["portal_dropped_fields"]["bytes"] > 15_000
    assert stored["alerts"][0]["labels"] == big["alerts"][0]["labels"] and stored["groupKey"] == big["groupKey"]


@pytest.mark.parametrize("path", ["ip/reserve", "ip/confirm", "ip/skip", "ip/release", "instances", "status", "step"])
def test_callback_doors_check_the_token_before_they_parse_the_body(client, event, path):
    url = f"/api/events/{event.pk}/callback/{path}"
    assert_error(client.post(url, data=DEEP, content_type="application/json"), 401)
    wrong = {"HTTP_AUTHORIZATION": "Bearer wrong"}
    assert_error(client.post(url, data=DEEP, content_type="application/json", **wrong), 403)
    assert not IpAllocation.objects.exists()


@pytest.mark.parametrize("path", ["ip/confirm", "ip/skip", "ip/release", "instances", "status", "step"])
def test_callback_doors_refuse_a_deep_body_with_the_right_token(client, event, path):
    url = f"/api/events/{event.pk}/callback/{path}"
    right = {"HTTP_AUTHORIZATION": f"Bearer {CALLBACK_TOKEN}"}
    body = assert_error(client.post(url, data=DEEP, content_type="application/json", **right), 400, "parse_error")
    assert "nested deeper" in body["detail"]
    assert not IpAllocation.objects.exists()
    assert not event.actions.exists()


def test_operator_doors_refuse_the_same(admin_client, config):
    for text in ('{"name": "p", "network": 1e400}', DEEP, '{"name": "a\\u0000b"}'):
        response = admin_client.post("/api/autoscaling/ip-pools", data=text, content_type="application/json")
        assert_error(response, 400, "parse_error")
    assert IpPool.objects.count() == 1


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/autoscaling/events", "created_after"),
        ("/api/autoscaling/events", "created_before"),
        ("/api/autoscaling/notifications", "received_after"),
        ("/api/autoscaling/decisions", "decided_before"),
    ],
)
def test_date_filters_refuse_an_offset_beyond_15_59(admin_client, path, parameter):
    response = admin_client.get(path, {parameter: "2026-01-01T00:00:00+21:00"})
    body = assert_error(response, 400)
    assert "+21:00" in " ".join(body["errors"][parameter]), body
    assert admin_client.get(path, {parameter: "2026-01-01T00:00:00-15:59"}).status_code == 200
    assert admin_client.get(path, {parameter: "2026-01-01T00:00:00+09:00"}).status_code == 200
    assert_error(admin_client.get(path, {parameter: "yesterday"}), 400)


# --- what an event's callback token may do with the pool -------------------------------------------------------
def reserve(client, event):
    return client.post(f"/api/events/{event.pk}/callback/ip/reserve", HTTP_AUTHORIZATION=f"Bearer {CALLBACK_TOKEN}")


def release(client, event, body=None):
    return client.post(
        f"/api/events/{event.pk}/callback/ip/release",
        data=json.dumps(body or {}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {CALLBACK_TOKEN}",
    )


def test_an_event_reserves_at_most_its_vm_count_plus_what_it_skipped(client, event):
    ScaleOutEvent.objects.filter(pk=event.pk).update(vm_count=2)
    first, second = (reserve(client, event).json()["address"] for _ in range(2))
    body = assert_error(reserve(client, event), 409, "reservation_limit")
    assert "holds 2 addresses for its 2 VMs" in body["detail"]
    assert IpAllocation.objects.filter(event=event).count() == 2

    skipped = client.post(
        f"/api/events/{event.pk}/callback/ip/skip",
        data=json.dumps({"address": second}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {CALLBACK_TOKEN}",
    )
    assert skipped.status_code == 200, skipped.content
    third = reserve(client, event)
    assert third.status_code == 201 and third.json()["address"] not in (first, second)
    assert_error(reserve(client, event), 409, "reservation_limit")


def test_a_finished_event_releases_only_addresses_still_reserved(client, event):
    ScaleOutEvent.objects.filter(pk=event.pk).update(vm_count=2)
    in_use, reserved = (reserve(client, event).json()["address"] for _ in range(2))
    confirmed = client.post(
        f"/api/events/{event.pk}/callback/ip/confirm",
        data=json.dumps({"address": in_use, "vm_name": "web-001"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {CALLBACK_TOKEN}",
    )
    assert confirmed.status_code == 200, confirmed.content
    ScaleOutEvent.objects.filter(pk=event.pk).update(status=ScaleOutEvent.Status.SUCCEEDED)

    body = assert_error(release(client, event, {"address": in_use}), 409, "in_use")
    assert "web-001" in body["detail"] and "finished" in body["detail"]
    assert release(client, event).json()["released"] == [reserved]
    states = dict(IpAllocation.objects.filter(event=event).values_list("address", "state"))
    assert states == {in_use: IpAllocation.State.IN_USE, reserved: IpAllocation.State.RELEASED}


def test_a_running_event_still_releases_what_it_uses(client, event):
    address = reserve(client, event).json()["address"]
    IpAllocation.objects.filter(address=address).update(state=IpAllocation.State.IN_USE, vm_name="web-001")
    assert release(client, event, {"address": address}).json()["released"] == [address]


def test_the_parser_takes_what_only_looks_like_a_bad_value():
    from common.parsers import loads

    # An escaped backslash before "u0000" is the text \u0000, not a NUL.
    assert loads('{"note": "\\\\u0000"}') == {"note": "\\u0000"}
    # Many brackets, little depth; a surrogate pair is one character.
    assert loads(json.dumps({"alerts": [{"labels": {}}] * 100, "emoji": "\ud83d\ude00"})) == {
        "alerts": [{"labels": {}}] * 100,
        "emoji": "\U0001f600",
    }
    assert loads("[" * 32 + "]" * 32) is not None
    assert loads('{"big": 9223372036854775807, "small": -9223372036854775807, "x": 1.5e308}')["x"] == 1.5e308
