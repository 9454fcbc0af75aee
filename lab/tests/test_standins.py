"""The Jenkins and F5 stand-ins speak their protocols to the real client libraries (python-jenkins, requests)."""

import sys
import time
import uuid

import pytest
import requests

import jenkins
from lab.components.f5 import F5StandinControl
from lab.components.jenkins import JenkinsStandinControl

pytestmark = pytest.mark.lab

JOB_XML = """<?xml version='1.1' encoding='UTF-8'?>
<flow-definition plugin="workflow-job">
  <properties>
    <hudson.model.ParametersDefinitionProperty>
      <parameterDefinitions>
        <hudson.model.StringParameterDefinition><name>EVENT_ID</name><defaultValue>0</defaultValue>
        </hudson.model.StringParameterDefinition>
        <hudson.model.ChoiceParameterDefinition><name>MODE</name>
          <choices class="java.util.Arrays$ArrayList"><a class="string-array"><string>normal</string>
          <string>dry</string></a></choices>
        </hudson.model.ChoiceParameterDefinition>
      </parameterDefinitions>
    </hudson.model.ParametersDefinitionProperty>
  </properties>
</flow-definition>
"""


class EchoRunner:
    """A build runner loaded by the stand-in process by name ("lab.tests.test_standins:EchoRunner")."""

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def run(self, build):
        build.log(f"echo {build.env['JOB_NAME']} #{build.env['BUILD_NUMBER']} EVENT_ID={build.env['EVENT_ID']}")
        code = build.run_command([sys.executable, "-c", self.behaviour["script"]])
        build.log(f"exit {code}")
        return "UNSTABLE" if code == 0 else "FAILURE"


@pytest.fixture(scope="module")
def jenkins_info(lab):
    return lab.info("jenkins")


@pytest.fixture
def jenkins_control(jenkins_info):
    control = JenkinsStandinControl(jenkins_info["control_url"])
    control.reset()
    yield control
    control.reset()
    control.set_build_behaviour(reset=True)


@pytest.fixture
def server(jenkins_info):
    return jenkins.Jenkins(jenkins_info["url"], jenkins_info["user"], jenkins_info["token"], timeout=5)


def wait_queue(server, queue_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = server.get_queue_item(queue_id)
        if item.get("executable"):
            return item
        time.sleep(0.05)
    raise AssertionError(f"queue item {queue_id} never started")


def test_python_jenkins_creates_a_job_and_runs_a_build(server, jenkins_control):
    name = f"standin-{uuid.uuid4().hex[:8]}"
    assert server.get_whoami()["id"] == "autoscale"
    server.create_job(name, JOB_XML)
    assert server.job_exists(name)
    assert server.get_version() == "2.440.3"  # auth is resolved by now; X-Jenkins on every answer
    assert [j["name"] for j in server.get_jobs() if j["name"] == name] == [name]

    queue_id = server.build_job(name, {"EVENT_ID": "7"})
    assert "In the quiet period" in server.get_queue_item(queue_id)["why"]
    number = wait_queue(server, queue_id)["executable"]["number"]
    build = jenkins_control.wait_build(name, number)
    assert build["result"] == "SUCCESS" and build["parameters"] == {"EVENT_ID": "7", "MODE": "normal"}
    info = server.get_build_info(name, number)
    assert info["result"] == "SUCCESS" and info["number"] == number == 1
    assert "Finished: SUCCESS" in server.get_build_console_output(name, number)
    assert server.get_job_info(name)["lastBuild"]["number"] == 1

    # a crumb was fetched once and sent with every POST
    assert len(jenkins_control.calls(path_contains="/crumbIssuer/")) == 1
    posts = jenkins_control.calls(method="POST")
    assert posts and all(c["headers"].get("jenkins-crumb") for c in posts)

    server.delete_job(name)
    assert not server.job_exists(name)


def test_jenkins_stand_in_protocol_details(jenkins_info, server, jenkins_control):
    name = f"standin-{uuid.uuid4().hex[:8]}"
    server.create_job(name, JOB_XML)
    url = jenkins_info["url"]
    auth = (jenkins_info["user"], jenkins_info["token"])

    anonymous = requests.get(f"{url}job/{name}/api/json", timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["X-Jenkins"]
    bad_crumb = requests.post(f"{url}job/{name}/disable", auth=auth, headers={"Jenkins-Crumb": "x"}, timeout=5)
    assert bad_crumb.status_code == 403
    bad_choice = requests.post(f"{url}job/{name}/buildWithParameters", params={"MODE": "x"}, auth=auth, timeout=5)
    assert bad_choice.status_code == 400 and "Illegal choice" in bad_choice.text
    duplicate = requests.post(f"{url}createItem", params={"name": name}, data=JOB_XML, auth=auth, timeout=5)
    assert duplicate.status_code == 400

    # identical requests waiting in the queue are folded into one item, as Jenkins does
    jenkins_control.set_build_behaviour(job=name, queue_delay=1.0)
    first = server.build_job(name, {"EVENT_ID": "1"})
    assert server.build_job(name, {"EVENT_ID": "1"}) == first
    assert server.build_job(name, {"EVENT_ID": "2"}) != first
    wait_queue(server, first)

    # tree= with a range, as the portal's client asks for build history
    tree = requests.get(
        f"{url}job/{name}/api/json", params={"tree": "builds[number,result]{0,1}"}, auth=auth, timeout=5
    ).json()
    assert tree["_class"].endswith("WorkflowJob") and set(tree) == {"_class", "builds"}
    assert len(tree["builds"]) == 1 and set(tree["builds"][0]) == {"_class", "number", "result"}

    # a cancelled queue item never becomes a build
    jenkins_control.set_build_behaviour(job=name, queue_delay=30)
    queue_id = server.build_job(name, {"EVENT_ID": "3"})
    server.cancel_queue(queue_id)
    item = server.get_queue_item(queue_id)
    assert item["cancelled"] is True and item["executable"] is None
    server.delete_job(name)


def test_build_runner_is_pluggable(server, jenkins_control):
    name = f"standin-{uuid.uuid4().hex[:8]}"
    server.create_job(name, JOB_XML)
    script = "import os; print('in', os.getcwd() == os.environ['WORKSPACE'], os.environ['EVENT_ID'])"
    jenkins_control.set_build_behaviour(job=name, runner="lab.tests.test_standins:EchoRunner", script=script)
    number = wait_queue(server, server.build_job(name, {"EVENT_ID": "9"}))["executable"]["number"]
    build = jenkins_control.wait_build(name, number)
    assert build["result"] == "UNSTABLE", build["console"]
    assert f"echo {name} #{number} EVENT_ID=9" in build["console"]
    assert "in True 9\nexit 0" in build["console"]

    # stopping the build kills the step's process
    jenkins_control.set_build_behaviour(job=name, script="import time; time.sleep(30)")
    number = wait_queue(server, server.build_job(name, {"EVENT_ID": "10"}))["executable"]["number"]
    time.sleep(0.2)
    server.stop_build(name, number)
    build = jenkins_control.wait_build(name, number, timeout=5)
    assert build["result"] == "ABORTED" and "exit -9" in build["console"]

    unknown = requests.post(f"{jenkins_control.base_url}_lab/behaviour", json={"runner": "nope"}, timeout=5)
    assert unknown.status_code == 400 and "unknown build runner" in unknown.text
    server.delete_job(name)


def test_f5_stand_in_speaks_icontrol_rest(lab):
    info = lab.info("f5")
    control = F5StandinControl(info["control_url"])
    control.reset()
    url = info["url"]
    assert requests.get(f"{url}/mgmt/tm/ltm/pool", timeout=5).status_code == 401
    login = requests.post(
        f"{url}/mgmt/shared/authn/login",
        json={"username": info["user"], "password": info["password"], "loginProviderName": "tmos"},
        timeout=5,
    )
    token = login.json()["token"]["token"]
    headers = {"X-F5-Auth-Token": token}
    pools = requests.get(f"{url}/mgmt/tm/ltm/pool", headers=headers, timeout=5).json()
    assert f"/{info['partition']}/{info['pool']}" in [p["fullPath"] for p in pools["items"]]
    missing = requests.get(f"{url}/mgmt/tm/ltm/pool/~Common~nope", headers=headers, timeout=5)
    assert missing.status_code == 404 and "was not found" in missing.json()["message"]
    assert [c["status"] for c in control.calls()] == [401, 200, 200, 404]


def test_f5_stand_in_member_session_state_and_connections(lab):
    """The PATCH values BIG-IP accepts (and its 400 for others), and the member stats a drain reads."""
    info = lab.info("f5")
    control = F5StandinControl(info["control_url"])
    control.reset()
    control.create_pool("drain_check")
    url = info["url"]
    login = requests.post(
        f"{url}/mgmt/shared/authn/login",
        json={"username": info["user"], "password": info["password"], "loginProviderName": "tmos"},
        timeout=5,
    )
    headers = {"X-F5-Auth-Token": login.json()["token"]["token"]}
    members = f"{url}/mgmt/tm/ltm/pool/~Common~drain_check/members"
    requests.post(members, json={"name": "127.0.252.5:80", "address": "127.0.252.5"}, headers=headers, timeout=5)
    member = f"{members}/~Common~127.0.252.5:80"
    time.sleep(0.6)  # past the stand-in's up_delay: the monitor reports it up
    bad = requests.patch(member, json={"state": "up"}, headers=headers, timeout=5)
    assert bad.status_code == 400 and bad.json()["message"] == 'invalid property value "state":"up"'
    bad = requests.patch(member, json={"session": "disabled"}, headers=headers, timeout=5)
    assert bad.status_code == 400

    def stats():
        body = requests.get(f"{member}/stats", headers=headers, timeout=5).json()
        (entry,) = body["entries"].values()
        return entry["nestedStats"]["entries"]

    control.set_member_connections("drain_check", "127.0.252.5:80", 10, decay_per_second=50)
    time.sleep(0.1)
    assert stats()["serverside.curConns"] == {"value": 10}  # enabled: holds
    answer = requests.patch(member, json={"session": "user-disabled"}, headers=headers, timeout=5).json()
    assert answer["session"] == "user-disabled"
    entries = stats()
    assert entries["status.enabledState"] == {"description": "disabled"}
    assert entries["status.availabilityState"] == {"description": "available"}
    time.sleep(0.3)  # 10 at 50 a second
    assert stats()["serverside.curConns"] == {"value": 0}
    requests.patch(member, json={"state": "user-down"}, headers=headers, timeout=5)
    assert stats()["status.availabilityState"] == {"description": "offline"}
    assert control.members("drain_check")["127.0.252.5:80"]["state"] == "user-down"
    requests.delete(member, headers=headers, timeout=5)
    (removed,) = control.removed("drain_check")
    assert (removed["member"], removed["session"], removed["state"], removed["connections"]) == (
        "127.0.252.5:80",
        "user-disabled",
        "user-down",
        0,
    )
