"""The flap guard's config check and the dry-run field through every door: the model's clean(), the API (400 in
the error shape) and the admin's form."""

import json

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from access import roles
from access.tests.helpers import role_user
from autoscaling.models import AutoscalingConfig

pytestmark = pytest.mark.django_db

# 80 % out, min 1: at 2 VMs a scale-in leaves 1 VM with twice the load, so the scale-in threshold may be 40 % at most.
REFUSAL = (
    "Too close to the scale-out threshold: at the scale-in threshold of 45 % on 2 VMs, removing 1 leaves 90 % on 1, "
    "above the scale-out threshold of 80 %, so the service would scale in and out by turns. Use a scale-in "
    "threshold of at most 40 %."
)


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(role_user(roles.ADMINISTRATOR, username="operator"))
    return client


def body(template, **fields):
    return {
        "service_name": "web",
        "template": template.pk,
        "threshold": 80,
        "min_instances": 1,
        "max_instances": 4,
        "monitored_instances": ["127.0.0.1:9100"],
        "f5_pool": "web-pool",
        **fields,
    }


def test_the_model_refuses_a_scale_in_threshold_that_flaps_and_accepts_one_that_does_not(make_config):
    config = make_config(scale_in_threshold=40)
    config.full_clean()
    config.scale_in_threshold = 45
    with pytest.raises(ValidationError) as refused:
        config.full_clean()
    assert refused.value.message_dict == {"scale_in_threshold": [REFUSAL]}
    # A bigger minimum moves the smallest fleet that scales in to 3 VMs: 3 x 45 / 2 = 67.5 %.
    config.min_instances = 2
    config.full_clean()
    # Target tracking has no scale-in threshold of its own (0.9 x target): nothing to check.
    config.min_instances, config.policy_type, config.target_value = 1, "target_tracking", 60
    config.full_clean()


def test_the_api_answers_400_with_the_numbers(api, template):
    response = api.post("/api/autoscaling/configs", body(template, scale_in_threshold=45), format="json")
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "invalid" and answer["errors"] == {"scale_in_threshold": [REFUSAL]}
    assert not AutoscalingConfig.objects.exists()
    created = api.post("/api/autoscaling/configs", body(template, scale_in_threshold=40), format="json")
    assert created.status_code == 201, created.json()
    # A change of another field that makes the stored threshold flap is refused too, naming the threshold.
    config_id = created.json()["id"]
    changed = api.patch(f"/api/autoscaling/configs/{config_id}", {"threshold": 70}, format="json")
    assert changed.status_code == 400
    assert "Use a scale-in threshold of at most 35 %." in changed.json()["errors"]["scale_in_threshold"][0]
    assert AutoscalingConfig.objects.get().threshold == 80


def test_the_api_sets_and_shows_dry_run(api, template):
    created = api.post("/api/autoscaling/configs", body(template), format="json").json()
    assert created["dry_run"] is False
    changed = api.patch(f"/api/autoscaling/configs/{created['id']}", {"dry_run": True}, format="json")
    assert changed.status_code == 200 and changed.json()["dry_run"] is True
    assert AutoscalingConfig.objects.get().dry_run is True


def change_form_data(client, url):
    """The admin's change form as the browser would post it back unchanged."""
    form = client.get(url).context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list | dict):
            data[name] = json.dumps(value)
        elif value is not None:
            data[name] = value
    return data


def test_the_admin_form_shows_the_refusal_and_sets_dry_run(admin_client, make_config):
    config = make_config(scale_in_threshold=40, enabled=False)
    url = f"/admin/autoscaling/autoscalingconfig/{config.pk}/change/"
    data = change_form_data(admin_client, url)
    response = admin_client.post(url, {**data, "scale_in_threshold": "45"})
    assert response.status_code == 200  # the form again, with its errors
    assert response.context["adminform"].form.errors == {"scale_in_threshold": [REFUSAL]}
    config.refresh_from_db()
    assert config.scale_in_threshold == 40
    saved = admin_client.post(url, {**data, "dry_run": "on"})
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    config.refresh_from_db()
    assert config.dry_run is True
