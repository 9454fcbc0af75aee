"""The admin edits a config's scrape targets and a pool's DNS servers and excluded addresses one a line, not as JSON,
and says which line is wrong and why, every wrong line at once."""

import pytest
from django.contrib.auth import get_user_model

from autoscaling.models import IpPool

pytestmark = pytest.mark.django_db

CONFIGS = "/admin/autoscaling/autoscalingconfig/"
POOLS = "/admin/autoscaling/ippool/"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("lists-admin", "a@example.com", "x"))
    return client


def form_data(response):
    """The change form as a browser would post it back, untouched (textareas as shown, checkboxes as ticked)."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [str(v) for v in value]
        elif value is not None:
            data[name] = str(value)
    for formset in response.context.get("inline_admin_formsets", []):
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = str(management[name].value())
    return data


def errors_of(response):
    assert response.status_code == 200, "saved, but it should not have been"
    return {name: list(errors) for name, errors in response.context["adminform"].form.errors.items()}


def test_a_configs_targets_are_one_a_line_and_every_wrong_line_is_named(admin_client, make_config, pool):
    config = make_config(ip_pool=pool, monitored_instances=["127.0.0.5:9100", "127.0.0.6:9100"])
    url = f"{CONFIGS}{config.pk}/change/"
    page = admin_client.get(url)
    html = page.content.decode()
    assert '<textarea name="monitored_instances"' in html
    assert "127.0.0.5:9100\n127.0.0.6:9100</textarea>" in html  # one a line, no brackets or quotes
    data = form_data(page)

    data["monitored_instances"] = "  127.0.0.7:9100 \n\n127.0.0.8:9100\n"  # spaces and blank lines do not count
    assert admin_client.post(url, data).status_code == 302
    config.refresh_from_db()
    assert config.monitored_instances == ["127.0.0.7:9100", "127.0.0.8:9100"]

    data["monitored_instances"] = "127.0.0.7:9100\nweb01\n10.9.9.9:9100\n127.0.0.7:9100\n127.0.0.9:70000"
    errors = errors_of(admin_client.post(url, data))["monitored_instances"]
    assert errors == [
        "Line 2: web01 is not host:port (e.g. 10.0.10.21:9100).",
        "Line 3: 10.9.9.9:9100 is outside the networks Prometheus may scrape (127.0.0.0/8); ask an administrator "
        "to add its network to MONITORED_NETWORKS.",
        "Line 4: 127.0.0.7:9100 is already on line 1.",
        "Line 5: 127.0.0.9:70000: the port must be a number from 1 to 65535.",
    ]
    config.refresh_from_db()
    assert config.monitored_instances == ["127.0.0.7:9100", "127.0.0.8:9100"]  # nothing half-written

    data["monitored_instances"] = ""
    assert admin_client.post(url, data).status_code == 302
    config.refresh_from_db()
    assert config.monitored_instances == []


def test_a_pools_dns_servers_and_excluded_addresses_are_one_a_line(admin_client, pool):
    url = f"{POOLS}{pool.pk}/change/"
    page = admin_client.get(url)
    assert "127.0.0.53</textarea>" in page.content.decode()
    data = form_data(page)

    data.update(dns_servers="127.0.0.53\n127.0.0.54", excluded_addresses="127.77.0.12\n 127.77.0.15 ")
    response = admin_client.post(url, data)
    assert response.status_code == 302, errors_of(response)
    pool.refresh_from_db()
    assert (pool.dns_servers, pool.excluded_addresses) == (["127.0.0.53", "127.0.0.54"], ["127.77.0.12", "127.77.0.15"])

    data.update(dns_servers="127.0.0.53\n\ndns.example\n127.0.0.53", excluded_addresses="127.77.0.12\n127.77.0.99")
    errors = errors_of(admin_client.post(url, data))
    assert errors["dns_servers"] == [
        "Line 3: dns.example is not an IPv4 address.",
        "Line 4: 127.0.0.53 is already on line 1.",
    ]
    # The model's own check (the range is the pool's) still speaks for the whole list.
    assert errors["excluded_addresses"] == ["127.77.0.99 is outside the range 127.77.0.10-127.77.0.29."]
    pool.refresh_from_db()
    assert pool.dns_servers == ["127.0.0.53", "127.0.0.54"]

    # A JSON list, as the field took before (a script may still post one), is read as its entries.
    data.update(dns_servers='["127.0.0.55"]', excluded_addresses="[]")
    assert admin_client.post(url, data).status_code == 302
    pool.refresh_from_db()
    assert (pool.dns_servers, pool.excluded_addresses) == (["127.0.0.55"], [])


def test_a_new_pool_in_the_admin_takes_its_lists_one_a_line(admin_client):
    page = admin_client.get(f"{POOLS}add/")
    data = form_data(page)
    data.update(
        name="lines-pool",
        network="127.78.0.0/24",
        first_address="127.78.0.10",
        last_address="127.78.0.20",
        gateway="127.78.0.1",
        dns_servers="127.78.0.2\n127.78.0.3",
        excluded_addresses="127.78.0.11",
    )
    response = admin_client.post(f"{POOLS}add/", data)
    assert response.status_code == 302, errors_of(response)
    pool = IpPool.objects.get(name="lines-pool")
    assert (pool.dns_servers, pool.excluded_addresses) == (["127.78.0.2", "127.78.0.3"], ["127.78.0.11"])
