"""integrations.jenkins through python-jenkins against the lab's Jenkins stand-in."""

import time
import uuid

import pytest

from integrations.errors import IntegrationError
from integrations.jenkins import JenkinsClient
from lab.components.jenkins import JenkinsStandinControl
from lab.core import free_port

pytestmark = pytest.mark.lab

JOB_XML = """<?xml version='1.1' encoding='UTF-8'?>
<flow-definition plugin="workflow-job">
  <description>{description}</description>
  <properties>
    <hudson.model.ParametersDefinitionProperty>
      <parameterDefinitions>
        <hudson.model.StringParameterDefinition>
          <name>EVENT_ID</name>
          <defaultValue>0</defaultValue>
        </hudson.model.StringParameterDefinition>
        <hudson.model.PasswordParameterDefinition>
          <name>CALLBACK_TOKEN</name>
          <defaultValue></defaultValue>
        </hudson.model.PasswordParameterDefinition>
        <hudson.model.BooleanParameterDefinition>
          <name>DRY_RUN</name>
          <defaultValue>false</defaultValue>
        </hudson.model.BooleanParameterDefinition>
      </parameterDefinitions>
    </hudson.model.ParametersDefinitionProperty>
  </properties>
  <disabled>false</disabled>
</flow-definition>
"""


@pytest.fixture(scope="module")
def jenkins_lab(lab):
    return lab.info("jenkins")


@pytest.fixture
def control(jenkins_lab):
    control = JenkinsStandinControl(jenkins_lab["control_url"])
    control.reset()
    yield control
    control.reset()
    control.set_build_behaviour(reset=True)


@pytest.fixture
def client(jenkins_lab):
    return JenkinsClient(jenkins_lab["url"], jenkins_lab["user"], jenkins_lab["token"], timeout=5.0)


@pytest.fixture
def job(client):
    name = f"autoscale-{uuid.uuid4().hex[:8]}"
    assert client.create_or_update_job(name, JOB_XML.format(description="test")) == "created"
    yield name
    client.delete_job(name)


def wait_for_build(client, job, queue_id, *, finished=True, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = client.queue_item(queue_id)
        if item.started:
            build = client.build(job, item.build_number)
            if not finished or not build.building:
                return item, build
        time.sleep(0.05)
    raise AssertionError(f"queue item {queue_id} of {job} did not reach a finished build in {timeout}s")


def test_create_and_update_write_without_reading_and_cope_with_a_race(client, control, job):
    control.reset()
    assert client.update_job(job, JOB_XML.format(description="written")) == "updated"
    assert client.create_job(job, JOB_XML.format(description="again")) == "updated"  # it existed already
    assert not control.calls(path_contains="/config.xml", method="GET")  # neither read the config
    assert "<description>again</description>" in client.job_config(job)

    client.delete_job(job)
    assert client.update_job(job, JOB_XML.format(description="back")) == "created"  # deleted since the caller read
    assert "<description>back</description>" in client.job_config(job)


def test_job_config_is_created_updated_or_left_unchanged(client, job):
    reindented = JOB_XML.format(description="test").replace("\n  ", "\n\t")
    assert client.create_or_update_job(job, reindented) == "unchanged"
    assert client.create_or_update_job(job, JOB_XML.format(description="changed")) == "updated"
    assert "<description>changed</description>" in client.job_config(job)
    assert client.job_exists(job)

    info = client.job_info(job)
    assert info.name == job and info.enabled and info.buildable
    assert [(p.name, p.type, p.default) for p in info.parameters] == [
        ("EVENT_ID", "String", "0"),
        ("CALLBACK_TOKEN", "Password", None),
        ("DRY_RUN", "Boolean", False),
    ]
    assert info.last_build_number is None and info.next_build_number == 1


def test_build_with_parameters_gets_a_number_a_result_and_a_log(client, control, job):
    queue_id = client.build_job(job, {"EVENT_ID": 42, "CALLBACK_TOKEN": "s3cret", "DRY_RUN": True})
    assert isinstance(queue_id, int)
    item, build = wait_for_build(client, job, queue_id)

    assert item.id == queue_id and item.job_name == job and not item.cancelled
    assert build.number == item.build_number == 1
    assert build.url == item.build_url and build.url.endswith(f"/job/{job}/1/")
    assert build.result == "SUCCESS" and not build.building and build.duration_ms >= 100
    assert build.parameters == {"EVENT_ID": "42", "CALLBACK_TOKEN": None, "DRY_RUN": True}
    assert build.queue_id == queue_id and build.timestamp is not None

    log = client.build_log(job, 1)
    assert "[param] EVENT_ID=42" in log and "Finished: SUCCESS" in log
    assert "s3cret" not in log

    # what the stand-in saw: a POST to buildWithParameters carrying the values, authenticated
    (call,) = control.calls(path_contains=f"/job/{job}/buildWithParameters")
    assert call["method"] == "POST" and call["status"] == 201
    assert call["params"] == {"EVENT_ID": "42", "CALLBACK_TOKEN": "s3cret", "DRY_RUN": "true"}
    # ...in the form body: the request line (what an access log keeps) carries no parameter.
    assert call["target"] == f"/job/{job}/buildWithParameters"
    assert call["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert control.build(job, 1)["parameters"]["CALLBACK_TOKEN"] == "s3cret"

    queue_id = client.build_job(job, {"EVENT_ID": 43})
    wait_for_build(client, job, queue_id)
    history = client.builds(job, limit=1)
    assert [b.number for b in history] == [2]
    assert history[0].parameters["EVENT_ID"] == "43" and history[0].result == "SUCCESS"
    assert [b.number for b in client.builds(job)] == [2, 1]
    info = client.job_info(job)
    assert info.last_build_number == 2 and info.next_build_number == 3 and info.color == "blue"


def test_build_result_and_stop_follow_the_stand_in(client, control, job):
    control.set_build_result("FAILURE", duration=0.05, job=job)
    _, build = wait_for_build(client, job, client.build_job(job, {"EVENT_ID": 1}))
    assert build.result == "FAILURE"
    assert "Finished: FAILURE" in client.build_log(job, build.number)

    control.set_build_behaviour(job=job, duration=None)  # runs until finished or stopped
    _, build = wait_for_build(client, job, client.build_job(job, {"EVENT_ID": 2}), finished=False)
    assert build.building and build.result is None
    client.stop_build(job, build.number)
    deadline = time.monotonic() + 5
    while client.build(job, build.number).building and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.build(job, build.number).result == "ABORTED"
    assert "Aborted by" in client.build_log(job, build.number)


def test_missing_job_build_and_queue_item_are_permanent_not_found(client):
    name = f"missing-{uuid.uuid4().hex[:8]}"
    assert client.job_exists(name) is False
    assert client.job_config(name) is None
    assert client.delete_job(name) is False
    for call in (
        lambda: client.job_info(name),
        lambda: client.build_job(name, {"EVENT_ID": 1}),
        lambda: client.build(name, 1),
        lambda: client.build_log(name, 1),
        lambda: client.queue_item(987654),
        lambda: client.enable_job(name),
    ):
        with pytest.raises(IntegrationError) as info:
            call()
        assert info.value.system == "jenkins"
        assert info.value.code == "not_found" and info.value.permanent
        assert "Jenkins has no" in info.value.message


def test_missing_build_of_an_existing_job_is_not_found(client, job):
    with pytest.raises(IntegrationError) as info:
        client.build(job, 99)
    assert info.value.code == "not_found" and f"build #99 of job {job}" in info.value.message


def test_disabled_job_refuses_builds_permanently(client, job):
    client.disable_job(job)
    info = client.job_info(job)
    assert not info.enabled and not info.buildable and info.color == "disabled"
    with pytest.raises(IntegrationError) as error:
        client.build_job(job, {"EVENT_ID": 1})
    assert error.value.code == "not_buildable" and error.value.permanent
    client.enable_job(job)
    assert client.job_info(job).enabled


def test_refused_token_is_permanent(jenkins_lab):
    client = JenkinsClient(jenkins_lab["url"], jenkins_lab["user"], "wrong-token", timeout=5.0)
    with pytest.raises(IntegrationError) as info:
        client.job_info("anything")
    assert info.value.code == "unauthorized" and info.value.permanent
    assert "JENKINS_TOKEN" in info.value.message and "wrong-token" not in info.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable_and_the_next_call_works(client, control, job, status):
    control.fail_next(1, status, path="/buildWithParameters")
    with pytest.raises(IntegrationError) as info:
        client.build_job(job, {"EVENT_ID": 1})
    assert info.value.code == "server_error" and not info.value.permanent
    assert f"answered HTTP {status}" in info.value.message and job in info.value.message
    wait_for_build(client, job, client.build_job(job, {"EVENT_ID": 1}))
    assert [c["status"] for c in control.calls(path_contains="/buildWithParameters")] == [status, 201]


def test_server_error_on_a_read_is_not_mistaken_for_a_missing_job(client, control, job):
    control.fail_next(1, 503, path=f"/job/{job}/api/json")
    with pytest.raises(IntegrationError) as info:
        client.job_info(job)
    assert info.value.code == "server_error" and not info.value.permanent


def test_slow_jenkins_times_out_retryably(jenkins_lab, control, job):
    client = JenkinsClient(jenkins_lab["url"], jenkins_lab["user"], jenkins_lab["token"], timeout=0.3)
    control.delay_next(1.0, path=f"/job/{job}/api/json")
    started = time.monotonic()
    with pytest.raises(IntegrationError) as info:
        client.job_info(job)
    assert time.monotonic() - started < 0.9
    assert info.value.code == "timeout" and not info.value.permanent
    assert "did not answer within 0.3 s" in info.value.message


def test_unreachable_jenkins_says_so(jenkins_lab, control, job):
    nobody = JenkinsClient(f"http://127.0.0.1:{free_port()}/", "autoscale", "token", timeout=2.0)
    with pytest.raises(IntegrationError) as info:
        nobody.build_job("any", {"EVENT_ID": 1})
    assert info.value.code == "unreachable" and not info.value.permanent
    assert "could not be reached" in info.value.message and "connection refused" in info.value.message

    client = JenkinsClient(jenkins_lab["url"], jenkins_lab["user"], jenkins_lab["token"], timeout=2.0)
    control.drop_next(1, path="/buildWithParameters")
    with pytest.raises(IntegrationError) as info:
        client.build_job(job, {"EVENT_ID": 1})
    assert info.value.code == "unreachable" and not info.value.permanent
    assert "closed without an answer" in info.value.message
