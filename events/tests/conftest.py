"""Fixtures of the events tests: configs, Alertmanager payloads (real captures), webhook and callback helpers."""

import hashlib
import json
from pathlib import Path

import pytest

from autoscaling.models import AutoscalingConfig
from events.models import ScaleOutEvent
from fleet.services import config_monitored_instances_sync
from lab.payloads import firing_notification
from templates_app.models import VMTemplate

PAYLOADS = Path(__file__).parent / "payloads"
WEBHOOK_TOKEN = "test-webhook-token"


def load_payload(name):
    return json.loads((PAYLOADS / name).read_text())


def firing_payload(service, **fields):
    """The captured first-firing payload (payloads/01_firing_first.json), re-labelled for `service`."""
    return firing_notification(
        service,
        receiver=f"autoscale-{service}",
        generator_url=(
            "http://vm:19090/graph?g0.expr=avg+by+%28service%29+%28node_cpu_usage_percent%7Bservice%3D%22"
            f"{service}%22%7D%29+%3E+80&g0.tab=1"
        ),
        external_url="http://vm:19093",
        **fields,
    )


def post_webhook(client, service, body, *, token=WEBHOOK_TOKEN, authorization=None, decide=True):
    headers = {"HTTP_AUTHORIZATION": authorization if authorization is not None else f"Bearer {token}"}
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    response = client.post(f"/api/webhook/autoscale/{service}", data=raw, content_type="application/json", **headers)
    if response.status_code == 202 and decide:
        # The decider runs behind the answer in a real cluster; here, at once, and the test reads what it decided.
        from events import intake
        from events.models import ScalingDecision

        intake.notifications_decide()
        response.decisions = [
            {
                "id": row.pk,
                "outcome": row.outcome,
                "reason": row.reason_text,
                "alert_name": row.alert_name,
                "fingerprint": row.fingerprint,
                "event": row.event_id,
            }
            for row in ScalingDecision.objects.filter(notification_id=response.json()["notification"]).order_by("pk")
        ]
    return response


def give_token(event, token):
    """Give an event a callback token as the trigger does (only the hash is stored)."""
    ScaleOutEvent.objects.filter(pk=event.pk).update(callback_token_hash=hashlib.sha256(token.encode()).hexdigest())


@pytest.fixture
def webhook_settings(settings):
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.WEBHOOK_BASIC_USER = "alertmanager"
    settings.WEBHOOK_BASIC_PASSWORD = "basic-secret"
    return settings


@pytest.fixture
def make_config(db):
    def make(service_name="web", **fields):
        template, _created = VMTemplate.objects.get_or_create(name="tpl-events", defaults={"status": "ready"})
        values = {
            "enabled": True,
            "min_instances": 1,
            "max_instances": 4,
            "scale_out_step": 1,
            "cooldown_seconds": 300,
            "monitored_instances": ["127.0.0.1:9100"],
        }
        values.update(fields)
        config = AutoscalingConfig.objects.create(service_name=service_name, template=template, **values)
        # As the config services do on save: its monitored instances are its fleet's adopted instances.
        config_monitored_instances_sync(config=config)
        return config

    return make


@pytest.fixture
def make_instances(db):
    """Inventory rows for a config, beside those adopted from its monitored instances."""
    from fleet.models import ManagedInstance

    def make(config, count=1, state=ManagedInstance.State.IN_SERVICE):
        return ManagedInstance.objects.bulk_create(
            ManagedInstance(config=config, state=state, vm_name=f"{config.service_name}-{n:03d}") for n in range(count)
        )

    return make


@pytest.fixture
def make_event(make_config):
    def make(config=None, **fields):
        config = config or make_config()
        values = {"service_name": config.service_name, "jenkins_job": f"vmautoscale-{config.service_name}"}
        values.update(fields)
        return ScaleOutEvent.objects.create(config=config, **values)

    return make


# --- the lab's Jenkins stand-in ------------------------------------------------------------------------------
JOB_PARAMETERS = [
    "EVENT_ID",
    "SERVICE_NAME",
    "CALLBACK_URL",
    "VM_COUNT",
    "TEMPLATE_NAME",
    "VM_NAME_PATTERN",
    "DATACENTER",
    "CLUSTER",
    "RESOURCE_POOL",
    "FOLDER",
    "DATASTORE",
    "NETWORK",
    "IP_POOL_ID",
    "F5_POOL",
    "F5_PARTITION",
    "F5_MEMBER_PORT",
]


def job_xml():
    strings = "".join(
        f"<hudson.model.StringParameterDefinition><name>{name}</name><defaultValue></defaultValue>"
        "</hudson.model.StringParameterDefinition>"
        for name in JOB_PARAMETERS
    )
    password = (
        "<hudson.model.PasswordParameterDefinition><name>CALLBACK_TOKEN</name><defaultValue></defaultValue>"
        "</hudson.model.PasswordParameterDefinition>"
    )
    return (
        "<?xml version='1.1' encoding='UTF-8'?><flow-definition><description>events test</description><properties>"
        f"<hudson.model.ParametersDefinitionProperty><parameterDefinitions>{strings}{password}"
        "</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>"
        "<disabled>false</disabled></flow-definition>"
    )


@pytest.fixture
def jenkins(lab, lab_settings):
    """The Jenkins stand-in with Django settings pointed at it; calls and faults reset around each test."""
    from lab.components.jenkins import JenkinsStandinControl

    settings = lab_settings("jenkins")
    settings.EVENT_TRIGGER_BACKOFF = 0.01
    settings.EVENT_QUEUE_WAIT = 3.0
    control = JenkinsStandinControl(lab.info("jenkins")["control_url"])
    control.reset(everything=True)
    control.set_build_behaviour(reset=True, duration=0.1, queue_delay=0.0)
    yield control
    control.reset(everything=True)


@pytest.fixture
def jenkins_job(jenkins):
    """Create the Jenkins job of a service in the stand-in (as provisioning would); returns its name."""
    from common.clients import jenkins_client

    def create(service_name="web"):
        name = f"vmautoscale-{service_name}"
        jenkins_client().create_or_update_job(name, job_xml())
        return name

    return create
