"""`/api/` is the browsable API's root listing the endpoints; the admin carries the product's name."""

from urllib.parse import urlsplit

import pytest
from django.urls import resolve
from django.utils import translation

from common import errors

pytestmark = pytest.mark.django_db


def test_api_root_lists_every_endpoint_and_each_link_resolves(client):
    response = client.get("/api/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    links = response.json()
    assert {"templates", "autoscaling_configs", "scale_out_events", "scaling_decisions", "docs"} <= links.keys()
    for key, url in links.items():
        path = urlsplit(url).path
        assert path.startswith("/api/"), (key, url)
        assert resolve(path).func is not errors.api_not_found, f"{key}: {url} falls to the API's 404"


def test_api_root_is_the_browsable_api_page(admin_client):
    response = admin_client.get("/api/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    page = response.content.decode()
    assert "VM Autoscale portal API" in page and "/api/autoscaling/configs" in page


def test_an_unknown_api_path_still_answers_the_json_404(client):
    response = client.get("/api/no-such-endpoint")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("language", "name", "index"),
    [("en", "VM Autoscale portal", "Portal administration"), ("ko", "VM 오토스케일 포털", "포털 관리")],
)
def test_the_admin_carries_the_products_name(admin_client, language, name, index):
    with translation.override(language):
        response = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE=language)
    page = response.content.decode()
    assert response.status_code == 200
    assert f'<a href="/admin/">{name}</a>' in page
    assert f"<title>{index} | {name}</title>" in page
    assert "Django" not in page
