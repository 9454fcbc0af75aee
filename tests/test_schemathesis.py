"""schemathesis over every operation of the API schema, against a live portal with a seeded database, valid
credentials and the lab's real vCenter simulator, Jenkins stand-in, Prometheus and Alertmanager behind it.

For each operation a bounded number of generated requests (EXAMPLES; half of them aimed at the seeded objects,
the other half at whatever ids the generator draws) must get no 5xx, a content type and a body that the schema
declares. This is how "no 500 on any input" and "the schema does not lie" stay true.
"""

import hashlib
import json

import hypothesis
import pytest
import requests
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import strategies as st
from knox.models import AuthToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from autoscaling.models import AutoscalingConfig, IpPool, ProvisioningRun
from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance
from fleet.services import config_monitored_instances_sync
from templates_app.models import VMTemplate

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

EXAMPLES = 6
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
WEBHOOK_TOKEN = "schemathesis-webhook-token"
CALLBACK_TOKEN = "schemathesis-callback-token"


@pytest.fixture
def portal(live_server, lab_settings, settings):
    """The live portal's URL, an administrator's API token and the seeded objects' ids per path parameter."""
    lab_settings("vcsim", "jenkins", "prometheus", "alertmanager")
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.PORTAL_URL = live_server.url
    admin = get_user_model().objects.create_superuser("schemathesis", password="unused-password")
    _instance, token = AuthToken.objects.create(user=admin)
    template = VMTemplate.objects.create(name="tpl-schemathesis", status=VMTemplate.Status.READY)
    pool = IpPool.objects.create(
        name="schemathesis", network="127.79.0.0/24", first_address="127.79.0.10", last_address="127.79.0.29"
    )
    config = AutoscalingConfig.objects.create(
        service_name="web",
        template=template,
        ip_pool=pool,
        enabled=True,
        f5_pool="web-pool",
        monitored_instances=["127.0.0.1:9100"],
    )
    config_monitored_instances_sync(config=config)
    event = ScaleOutEvent.objects.create(
        config=config,
        service_name="web",
        jenkins_job="vmautoscale-web",
        status=ScaleOutEvent.Status.RUNNING,
        callback_token_hash=hashlib.sha256(CALLBACK_TOKEN.encode()).hexdigest(),
    )
    EventAction.objects.create(event=event, step=EventAction.Step.IP_ALLOCATE, status=EventAction.Status.SUCCEEDED)
    notification = AlertNotification.objects.create(
        service_name="web", config=config, status="firing", group_key="{}:{}", receiver="r", payload={}
    )
    ScalingDecision.objects.create(
        notification=notification, event=event, service_name="web", outcome=ScalingDecision.Outcome.SCALE_OUT
    )
    run = ProvisioningRun.objects.create(reason="schemathesis")
    instance = ManagedInstance.objects.filter(config=config).first()
    seeded = {
        "/api/autoscaling/configs/{id}": {"id": config.pk},
        "/api/autoscaling/ip-pools/{id}": {"id": pool.pk},
        "/api/autoscaling/events/{id}": {"id": event.pk},
        "/api/autoscaling/instances/{id}": {"id": instance.pk},
        "/api/autoscaling/notifications/{id}": {"id": notification.pk},
        "/api/autoscaling/provisioning-runs/{id}": {"id": run.pk},
        "/api/templates/{id}": {"id": template.pk},
        "/api/events/": {"event_id": event.pk, "instance_id": instance.pk},
        "/api/jenkins/": {"job_name": "vmautoscale-web", "number": 1},
        "/api/monitoring/": {"service": "web"},
        "/api/webhook/": {"service": "web"},
    }
    return live_server.url, token, seeded


def credentials(path, token):
    """The credential each door takes: the webhook's and the callbacks' bearer tokens, an API token elsewhere."""
    if path.startswith("/api/webhook/"):
        return {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    if path.startswith("/api/events/"):
        return {"Authorization": f"Bearer {CALLBACK_TOKEN}"}
    return {"Authorization": f"Token {token}"}


def seeded_parameters(path, seeded):
    for prefix, values in seeded.items():
        if path.startswith(prefix) if prefix.endswith("/") else path.startswith(prefix.split("{")[0] + "{"):
            return values
    return {}


def fuzz(operation, *, url, session, token, parameters):
    """EXAMPLES generated requests to one operation, each checked; raises what schemathesis found."""

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(), aim_at_seeded=st.booleans())
    def call(case, aim_at_seeded):
        if aim_at_seeded:
            for name in case.path_parameters or {}:
                if name in parameters:
                    case.path_parameters[name] = parameters[name]
        case.call_and_validate(
            base_url=url, session=session, headers=credentials(operation.path, token), checks=CHECKS, timeout=30
        )

    call()


def test_every_operation_answers_without_5xx_and_as_its_schema_says(portal):
    url, token, seeded = portal
    with requests.Session() as session:
        session.headers["Authorization"] = f"Token {token}"
        document = session.get(f"{url}/api/schema/", params={"format": "json"}, timeout=30)
        assert document.status_code == 200, document.text[:500]
        schema = schemathesis.openapi.from_dict(json.loads(document.text))
        failures = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            parameters = seeded_parameters(operation.path, seeded)
            try:
                fuzz(operation, url=url, session=session, token=token, parameters=parameters)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; failures reported together
                failures.append(f"{operation.label}: {exc}")
    assert operations >= 40, operations
    assert not failures, "\n\n".join(failures)
