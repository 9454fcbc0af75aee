"""The Generic Webhook Trigger of a job as the portal renders it, called on the lab's Jenkins stand-in (which models
the plugin's invoke endpoint): the token is the Jenkins credential, and a caller can set SERVICE_NAME only."""

import time

import pytest
import requests

from autoscaling.provisioning import inputs
from autoscaling.rendering import job_xml
from common.clients import jenkins_client
from lab.components.jenkins import JenkinsStandinControl
from pipeline import contract

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

TOKEN = "trigger-secret-text-4711"
HOSTILE = {
    "EVENT_ID": "999",
    "CALLBACK_URL": "http://127.0.0.1:9/steal",
    "CALLBACK_TOKEN": "forged",
    "FOLDER": "/DC0/vm/elsewhere",
    "DATASTORE": "other-ds",
    "VM_COUNT": "50",
    "TEMPLATE_NAME": "other-template",
}


@pytest.fixture
def rendered_job(lab, lab_settings, make_config):
    settings = lab_settings("jenkins")
    control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
    control.add_secret_text(contract.TRIGGER_CREDENTIAL_ID, TOKEN)
    config = make_config("gwt-web", folder="/DC0/vm", datastore="LocalDS_0")
    name = config.jenkins_job_name
    jenkins_client().create_or_update_job(name, job_xml(inputs.service_spec(config), inputs.render_context()))
    yield settings, control, name
    jenkins_client().delete_job(name)


def invoke(settings, body, **headers):
    return requests.post(
        f"{settings.JENKINS_URL}/generic-webhook-trigger/invoke", json=body, headers=headers, timeout=5
    )


def test_the_trigger_takes_only_the_service_name_and_its_token_from_the_credential(rendered_job):
    settings, control, name = rendered_job
    answer = invoke(settings, {"SERVICE_NAME": "gwt-web", **HOSTILE}, Authorization=f"Bearer {TOKEN}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["jobs"][name]["triggered"] is True
    deadline = time.monotonic() + 10
    while not control.job(name)["builds"]:
        assert time.monotonic() < deadline, "the trigger started no build"
        time.sleep(0.05)
    parameters = control.build(name, control.job(name)["builds"][0])["parameters"]
    assert parameters["SERVICE_NAME"] == "gwt-web"
    # Nothing else the caller sent was used: the callback, the token and the placement are the job's defaults.
    assert parameters["CALLBACK_URL"] == settings.PORTAL_URL
    assert parameters["CALLBACK_TOKEN"] == "" and parameters["EVENT_ID"] == ""
    assert (parameters["FOLDER"], parameters["DATASTORE"], parameters["VM_COUNT"]) == ("/DC0/vm", "LocalDS_0", "1")
    assert parameters["TEMPLATE_NAME"] != "other-template"


def test_the_trigger_refuses_a_wrong_token_and_another_service(rendered_job):
    settings, control, name = rendered_job
    assert invoke(settings, {"SERVICE_NAME": "gwt-web"}, Authorization="Bearer wrong").status_code == 404
    assert invoke(settings, {"SERVICE_NAME": "gwt-web"}).status_code == 404  # no token at all
    other = invoke(settings, {"SERVICE_NAME": "someone-else"}, Authorization=f"Bearer {TOKEN}")
    assert other.json()["jobs"][name]["triggered"] is False
    time.sleep(0.3)
    assert control.job(name)["builds"] == []
