"""Every error under /api/ answers application/json in the one shape {"detail", "code", "errors"} (common/errors.py).

The admin keeps Django's HTML pages.
"""

import json

import pytest
from django.core.exceptions import PermissionDenied, RequestDataTooBig

from common import errors
from templates_app.models import VMTemplate

WEBHOOK_TOKEN = "errors-webhook-token"


def assert_error(response, status, code=None):
    """The one shape: a plain-string detail, a code, and errors as field -> list of plain strings."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert {"detail", "code", "errors"} <= body.keys(), body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["errors"], dict), body
    for field, messages in body["errors"].items():
        assert isinstance(field, str) and isinstance(messages, list), body
        assert messages and all(isinstance(m, str) for m in messages), body
    assert "ErrorDetail" not in response.content.decode(), body
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture
def webhook(client, settings, db):
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN

    def post(body, *, content_type="application/json", token=WEBHOOK_TOKEN):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return client.post("/api/webhook/autoscale/web", data=data, content_type=content_type, **headers)

    return post


def test_400_validation_names_the_field(admin_client):
    response = admin_client.post("/api/autoscaling/ip-pools", {"name": "p"}, content_type="application/json")
    body = assert_error(response, 400, "invalid")
    assert body["errors"]["network"] == ["This field is required."]
    assert body["detail"].startswith("Invalid ") and ": " in body["detail"]


def test_400_nested_validation_is_flattened_to_plain_strings(webhook):
    alert = {"status": "firing", "labels": {"service": ["not", "a", "string"]}, "fingerprint": "XYZ"}
    response = webhook({"version": "4", "status": "firing", "receiver": "r", "alerts": [alert]})
    body = assert_error(response, 400, "invalid")
    text = response.content.decode()
    assert "[" not in body["detail"] and "ErrorDetail" not in text and "string=" not in text
    # The nested fields are dotted paths, each with its plain reasons.
    assert "alerts.0.fingerprint" in body["errors"], body
    assert "alerts.0.startsAt" in body["errors"], body
    assert any(key.startswith("alerts.0.labels.service") for key in body["errors"]), body
    for messages in body["errors"].values():
        for message in messages:
            assert "[" not in message and "{" not in message, body


def test_400_malformed_json(admin_client):
    response = admin_client.post("/api/autoscaling/ip-pools", data="{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_400_a_body_that_is_not_an_object(webhook):
    assert_error(webhook("[1, 2]"), 400, "invalid")


def test_401_webhook_without_credentials(webhook):
    response = webhook({}, token="")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_401_callback_without_token(client, db):
    response = client.post("/api/events/1/callback/status", data="{}", content_type="application/json")
    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.post("/api/events/1/callback/ip/reserve"), 401)


def test_403_operator_endpoint_without_credentials(client, db):
    body = assert_error(client.get("/api/autoscaling/configs"), 403, "not_authenticated")
    assert body["detail"] == "Authentication credentials were not provided."
    assert_error(client.get("/api/templates", HTTP_AUTHORIZATION="Token nope"), 403, "authentication_failed")


def test_404_unknown_path_under_api(admin_client, client, db):
    # `/api/` itself is the API root (tests/test_api_root.py).
    for path in ("/api/nope", "/api/templates/", "/api/autoscaling/configs/1/nope", "/api/x/"):
        body = assert_error(admin_client.get(path), 404, "not_found")
        assert path in body["detail"]
    assert_error(client.post("/api/nope", data="{}", content_type="application/json"), 404, "not_found")


def test_a_slash_less_path_of_an_endpoint_still_redirects(admin_client):
    response = admin_client.get("/api/schema?format=json")
    assert response.status_code == 301 and response["Location"] == "/api/schema/?format=json"


def test_404_unknown_object(admin_client):
    body = assert_error(admin_client.get("/api/templates/999999"), 404, "not_found")
    assert "VMTemplate" in body["detail"]


def test_405_method_not_allowed(admin_client):
    assert_error(admin_client.delete("/api/autoscaling/sync"), 405, "method_not_allowed")
    assert_error(admin_client.put("/api/templates/1", {}, content_type="application/json"), 405)


def test_409_conflict(admin_client):
    template = VMTemplate.objects.create(name="busy", status=VMTemplate.Status.CONVERTING)
    body = assert_error(admin_client.delete(f"/api/templates/{template.pk}"), 409, "template_busy")
    assert "still being converted" in body["detail"]


def test_413_oversized_body(webhook, admin_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = assert_error(webhook({"padding": "x" * 5000}), 413, "request_too_large")
    assert "too large" in body["detail"]
    response = admin_client.post("/api/autoscaling/ip-pools", {"name": "x" * 5000}, content_type="application/json")
    assert_error(response, 413, "request_too_large")


def test_415_unsupported_media_type(admin_client, webhook):
    response = admin_client.post("/api/autoscaling/ip-pools", data="name=p", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    assert_error(webhook("a=b", content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type")


def test_502_external_system_unreachable(admin_client, settings):
    settings.VCENTER_URL = "https://127.0.0.1:1/sdk"
    settings.VCENTER_TIMEOUT = 5
    body = assert_error(admin_client.get("/api/templates/vms"), 502)
    assert "vCenter" in body["detail"]
    assert body["system"] == "vcenter" and body["retryable"] is True


def test_django_level_errors_under_api_are_json_and_html_elsewhere(rf):
    """The handlers Django calls for errors outside a DRF view (a crash, a body too big for a form, a refusal)."""
    body = assert_error(errors.handler500(rf.get("/api/templates")), 500, "server_error")
    assert "log" in body["detail"]
    assert_error(errors.handler400(rf.post("/api/templates"), RequestDataTooBig()), 413, "request_too_large")
    assert_error(errors.handler400(rf.get("/api/templates"), None), 400, "bad_request")
    assert_error(errors.handler403(rf.get("/api/templates"), PermissionDenied()), 403, "permission_denied")
    for response in (
        errors.handler500(rf.get("/admin/")),
        errors.handler400(rf.get("/admin/"), RequestDataTooBig()),
        errors.handler403(rf.get("/admin/"), PermissionDenied()),
    ):
        assert response["Content-Type"].startswith("text/html")


def test_the_admin_keeps_its_html_pages(admin_client, client, db):
    for c in (admin_client, client):
        response = c.get("/admin/no-such-page/at-all")
        assert response.status_code in (302, 404)
        if response.status_code == 404:
            assert response["Content-Type"].startswith("text/html")
    assert admin_client.get("/admin/no-such-page/at-all").status_code == 404
    response = client.get("/no-such-page")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_nested_errors_flatten_to_dotted_paths_of_plain_strings():
    from django.core.exceptions import ValidationError
    from rest_framework.exceptions import ErrorDetail

    nested = {"alerts": [{}, {"labels": {"service": [ErrorDetail("Not a string.", code="invalid")]}}], "x": "y"}
    assert errors.flatten_errors(nested) == {"alerts.1.labels.service": ["Not a string."], "x": ["y"]}
    assert errors.flatten_errors(["one", "two"]) == {"non_field_errors": ["one", "two"]}
    refusal = errors.portal_error(ValidationError({"__all__": ["Both at once."], "name": ["Taken."]}))
    assert refusal.status == 400 and refusal.fields == {"non_field_errors": ["Both at once."], "name": ["Taken."]}
    assert refusal.message == "Both at once."
