"""A service of the user's own, made through the API only, scales out in the lab as the demo does (issue 17, item 3).

Nothing of demo/ is used: the template, the IP pool and the config come from the portal's API, the F5 pool from the
F5 stand-in's iControl REST (as an operator makes it on a BIG-IP), the load from the metrics stand-in's control API.
What `make run` does for every config (lab/wiring.py: every job runs the pipeline, the VM agent boots a node exporter
for every scrape target on a lab address) is all the lab does for it.
"""

import pytest
import requests
from django.contrib.auth import get_user_model

from events.models import EventAction, ScaleOutEvent
from lab import wiring as lab_wiring
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def _f5_pool_create(lab, name):
    """The pool, created as on a BIG-IP: log in, POST /mgmt/tm/ltm/pool."""
    f5 = lab.info("f5")
    login = requests.post(
        f"{f5['url']}/mgmt/shared/authn/login",
        json={"username": f5["user"], "password": f5["password"], "loginProviderName": "tmos"},
        timeout=10,
    )
    login.raise_for_status()
    headers = {"X-F5-Auth-Token": login.json()["token"]["token"]}
    body = {"name": name, "partition": "Common", "monitor": "/Common/tcp"}
    requests.post(f"{f5['url']}/mgmt/tm/ltm/pool", json=body, headers=headers, timeout=10).raise_for_status()


def test_a_second_config_created_through_the_api_scales_out(e2e):
    lab = e2e.lab
    # What `python -m lab up` wires for every service; here for this session's network (its agent already runs).
    lab_wiring.every_service_wire(lab, networks=[str(e2e.network)])
    user = get_user_model().objects.create_superuser("operator", "operator@example.com", "s3cret-pass")
    api = requests.Session()
    api.auth = (user.username, "s3cret-pass")
    plan = e2e.plan()  # only for its free /24, its names and the clean-up: nothing of the demo seeds it
    service, net = plan.service, plan.net
    vm_port = lab.info("metrics")["vm_port"]
    try:
        answer = api.post(
            f"{e2e.url}/api/templates",
            json={"source_vm": "DC0_H0_VM1", "name": f"{service}-tpl", "method": "clone"},
            timeout=30,
        )
        assert answer.status_code == 202 or answer.status_code == 201, answer.text
        template_id = answer.json()["id"]

        def template_ready():
            status = api.get(f"{e2e.url}/api/templates/{template_id}", timeout=10).json()["status"]
            assert status != "failed"
            return status == "ready"

        wait_for("the template to be converted", template_ready, timeout=180)  # a clone: slow on a loaded machine

        answer = api.post(
            f"{e2e.url}/api/autoscaling/ip-pools",
            json={
                "name": f"{service}-ips",
                "network": str(net),
                "first_address": str(net.network_address + 20),
                "last_address": str(net.network_address + 29),
                "gateway": str(net.network_address + 1),
                "ping_check": False,  # every loopback address answers a ping
            },
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        pool_id = answer.json()["id"]

        f5_pool = plan.f5_pool
        _f5_pool_create(lab, f5_pool)
        monitored = f"{net.network_address + 5}:{vm_port}"
        answer = api.post(
            f"{e2e.url}/api/autoscaling/configs",
            json={
                "service_name": service,
                "template": template_id,
                "enabled": True,
                "metric": "cpu",
                "threshold": 60,
                "duration_seconds": 2,
                "min_instances": 1,
                "max_instances": 3,
                "cooldown_seconds": 300,
                "cluster": "DC0_C0",
                "ip_pool": pool_id,
                "f5_pool": f5_pool,
                "f5_member_port": 8081,
                "monitored_instances": [monitored],
            },
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        config_id = answer.json()["id"]

        def synced():
            config = api.get(f"{e2e.url}/api/autoscaling/configs/{config_id}", timeout=10).json()
            assert config["sync_state"] != "error", config["sync_error"]
            return config["sync_state"] == "synced"

        wait_for("the config to be provisioned", synced, timeout=90)
        # The VM agent booted the monitored instance's node exporter; Prometheus scrapes it.
        wait_for("the monitored VM to be scraped", lambda: e2e.scrape_targets(plan) == {monitored: "up"}, timeout=60)

        e2e.metrics.set_load(service, cpu_percent=90)
        event = e2e.wait_event(plan, timeout=90)
        assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, e2e.console(event))
        assert "[Pipeline] stage" in e2e.console(event)  # the real pipeline ran, not a build that only logs
        steps = {a.step: a.status for a in EventAction.objects.filter(event=event)}
        assert steps[EventAction.Step.HEALTH_CHECK] == EventAction.Status.SUCCEEDED

        (ip,) = event.vm_ips
        (name,) = event.vm_names
        vm = e2e.vms(plan)[name]
        assert vm.powered_on and vm.ip_address == ip
        assert e2e.f5_members(plan)[f"{ip}:8081"]["state"] == "up"
        # The clone's node exporter boots too: the load spreads over two VMs (45 % each) and the alert resolves.
        wait_for(
            "the new VM to be scraped",
            lambda: e2e.scrape_targets(plan) == {monitored: "up", f"{ip}:{vm_port}": "up"},
            timeout=60,
        )
        assert e2e.metrics.state()["services"][service]["powered_on"] == 2
    finally:
        e2e.jenkins.set_build_behaviour(reset=True)  # the other tests' builds: the stand-in's default again
