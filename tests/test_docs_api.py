"""docs/api-reference.md matches the API: every endpoint of the OpenAPI schema is documented, and no other.

An endpoint is documented by a heading "### `METHOD /path`" (paths as in the schema, e.g. `/api/templates/{id}`);
the endpoint sections are regenerated with `.venv/bin/python docs/gen_api_reference.py`.
"""

import re
from pathlib import Path

import pytest
from django.utils import translation
from drf_spectacular.generators import SchemaGenerator

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api-reference.md"
METHODS = ("get", "post", "put", "patch", "delete")
HEADING = re.compile(r"^#{2,4} `(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`\s*$", re.MULTILINE)
PLAIN_VIEWS = {("GET", "/healthz"), ("GET", "/metrics")}


@pytest.fixture(scope="module")
def schema():
    with translation.override("en"):
        return SchemaGenerator().get_schema(request=None, public=True)


def schema_endpoints(schema):
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in METHODS if method in item}


def documented_endpoints():
    return set(HEADING.findall(DOC.read_text(encoding="utf-8")))


def test_every_endpoint_of_the_schema_is_documented(schema):
    endpoints = schema_endpoints(schema)
    assert len(endpoints) > 30, "the schema lost its endpoints"
    missing = sorted(endpoints - documented_endpoints())
    assert not missing, (
        f"endpoints of the API missing from {DOC.relative_to(ROOT)}: {missing} "
        "(run .venv/bin/python docs/gen_api_reference.py and describe them)"
    )


def test_the_reference_lists_no_endpoint_the_api_does_not_have(schema):
    extra = sorted(documented_endpoints() - schema_endpoints(schema) - PLAIN_VIEWS)
    assert not extra, f"{DOC.relative_to(ROOT)} documents endpoints the API does not have: {extra}"


def test_plain_views_are_documented_in_their_own_section(client, db):
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Plain endpoints") :]
    assert set(HEADING.findall(section)) == PLAIN_VIEWS
    # They exist and are not part of the API schema.
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/metrics").status_code in (200, 401)


def test_every_status_code_of_the_schema_is_in_the_reference(schema):
    """Each documented endpoint's table lists the status codes the schema gives it (200, 400, 409, 502...)."""
    text = DOC.read_text(encoding="utf-8")
    problems = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            heading = f"\n### `{method.upper()} {path}`"
            start = text.index(heading)
            section = text[start : text.find("\n### ", start + 1)]
            for status in item[method]["responses"]:
                if not re.search(rf"^\| {status} \|", section, re.MULTILINE):
                    problems.append(f"{method.upper()} {path}: {status}")
    assert not problems, f"status codes missing from {DOC.relative_to(ROOT)}: {problems}"


def test_authentication_and_errors_are_described():
    text = DOC.read_text(encoding="utf-8")
    for needle in (
        "Authorization: Token",
        "Authorization: Bearer $WEBHOOK_TOKEN",
        "Authorization: Bearer $CALLBACK_TOKEN",
        "| 400 |",
        "| 401 |",
        "| 403 |",
        "| 404 |",
        "| 409 |",
        "| 502 |",
    ):
        assert needle in text, f"{DOC.relative_to(ROOT)} does not mention {needle!r}"
