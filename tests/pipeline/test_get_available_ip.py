"""scripts/get-available-ip.py against the portal's IP endpoints (a live portal), and alone as a ping finder."""

import json
import subprocess
import sys

import pytest

from autoscaling.models import IpAllocation
from tests.pipeline.conftest import GET_IP, ROOT, portal_env, run_get_ip, skip_on_in_memory_sqlite

State = IpAllocation.State


def test_endpoints_need_the_events_own_token(client, make_event, ip):
    event, token = make_event()
    other, other_token = make_event()
    url = f"/api/events/{event.pk}/callback/ip/reserve"
    assert client.post(url).status_code == 401
    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {other_token}").status_code == 403
    assert not IpAllocation.objects.exists()
    answer = client.post(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 201
    body = answer.json()
    assert body["address"] == ip(10)
    assert (body["netmask"], body["prefix_length"], body["gateway"]) == ("255.255.255.0", 24, ip(1))
    assert body["dns_servers"] == [ip(2)]


def test_a_finished_event_can_release_but_not_reserve(client, make_event, ip):
    event, token = make_event()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    base = f"/api/events/{event.pk}/callback/ip"
    assert client.post(f"{base}/reserve", **auth).status_code == 201
    event.status = event.Status.CANCELLED  # an operator cancelled it while the build ran
    event.save()
    assert client.post(f"{base}/reserve", **auth).status_code == 403
    answer = client.post(f"{base}/release", {}, content_type="application/json", **auth)
    assert answer.status_code == 200 and answer.json()["released"] == [ip(10)]
    assert IpAllocation.objects.get(address=ip(10)).state == State.RELEASED


def test_bad_body_names_the_field(client, make_event):
    event, token = make_event()
    answer = client.post(
        f"/api/events/{event.pk}/callback/ip/confirm",
        {"address": "not-an-ip"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 400
    assert set(answer.json()["errors"]) == {"address", "vm_name"}


def test_exhausted_pool_answers_409_with_a_code(client, make_pool, make_event, ip):
    event, token = make_event(pool=make_pool(first=ip(10), last=ip(10)), vm_count=2)
    url = f"/api/events/{event.pk}/callback/ip/reserve"
    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 201
    answer = client.post(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 409
    assert answer.json()["code"] == "pool_exhausted"
    assert "exhausted" in answer.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_script_reserves_confirms_and_releases_through_the_portal(live_server, make_event, tmp_path, ip):
    event, token = make_event()
    env = portal_env(live_server, event, token)
    state_file = tmp_path / "state.json"

    reserved = run_get_ip("--json", "--state", str(state_file), env=env)
    assert reserved.returncode == 0, reserved.stderr
    body = json.loads(reserved.stdout)
    assert body["address"] == ip(10) and body["gateway"] == ip(1) and body["skipped"] == []
    assert json.loads(state_file.read_text())["ips"][0]["address"] == ip(10)
    row = IpAllocation.objects.get(address=ip(10))
    assert (row.state, row.event_id) == (State.RESERVED, event.pk)

    confirmed = run_get_ip("--confirm", ip(10), "--vm", "web-001", env=env)
    assert confirmed.returncode == 0, confirmed.stderr
    row.refresh_from_db()
    assert (row.state, row.vm_name) == (State.IN_USE, "web-001")

    for _ in range(2):  # the undo may run twice (a retried stage); the second time is a no-op
        released = run_get_ip("--release-all", "--state", str(state_file), env=env)
        assert released.returncode == 0, released.stderr
    row.refresh_from_db()
    assert row.state == State.RELEASED
    assert json.loads(state_file.read_text())["ips"] == []


@pytest.mark.django_db(transaction=True)
def test_script_says_pool_exhausted_and_exits_3(live_server, make_pool, make_event, ip):
    event, token = make_event(pool=make_pool(first=ip(10), last=ip(11)), vm_count=3)
    env = portal_env(live_server, event, token)
    assert run_get_ip(env=env).returncode == 0
    assert run_get_ip(env=env).returncode == 0
    result = run_get_ip(env=env)
    assert result.returncode == 3
    assert "no free address" in result.stderr and "exhausted" in result.stderr
    assert result.stdout == ""


@pytest.mark.django_db(transaction=True)
def test_script_skips_and_records_an_address_that_answers_ping(live_server, make_pool, make_event, ping_namespace, ip):
    """In the namespace only .10 answers: the portal offers it first, the script skips it."""
    event, token = make_event(pool=make_pool(ping_check=True))
    env = {**portal_env(live_server, event, token), "PING_COMMAND": ping_namespace}
    result = run_get_ip("--json", env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["address"], body["skipped"]) == (ip(11), [ip(10)])
    skipped = IpAllocation.objects.get(address=ip(10))
    assert skipped.state == State.SKIPPED and skipped.event_id == event.pk

    # The pool's ping check is off: the answering address would be handed out (nothing pinged).
    pool = event.config.ip_pool
    pool.ping_check = False
    pool.save()
    IpAllocation.objects.all().delete()
    result = run_get_ip("--json", env=env)
    assert json.loads(result.stdout)["address"] == ip(10)


@pytest.mark.django_db(transaction=True)
def test_two_pipelines_at_once_get_different_addresses(live_server, make_event):
    skip_on_in_memory_sqlite()
    first, first_token = make_event(vm_count=3)
    second, second_token = make_event(pool=first.config.ip_pool, vm_count=3)
    procs = [
        subprocess.Popen(
            [sys.executable, str(GET_IP), "--count", "3"],
            env={**portal_env(live_server, event, token), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for event, token in ((first, first_token), (second, second_token))
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    addresses = [out.split() for out, _err in outputs]
    assert len(addresses[0]) == len(addresses[1]) == 3
    assert not set(addresses[0]) & set(addresses[1])
    by_event = {
        e.pk: sorted(IpAllocation.objects.filter(event=e).values_list("address", flat=True)) for e in (first, second)
    }
    assert by_event == {first.pk: sorted(addresses[0]), second.pk: sorted(addresses[1])}


def test_range_only_finds_the_first_address_that_does_not_answer(ping_namespace, ip):
    """The seed's original behaviour: no portal, ping each address of the range, print the first silent one."""
    result = run_get_ip("--range", f"{ip(10)}-{ip(12)}", "--ping-command", ping_namespace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ip(11)
    as_json = run_get_ip("--range", f"{ip(10)}-{ip(12)}", "--json", "--ping-command", ping_namespace)
    assert json.loads(as_json.stdout) == {"address": ip(11)}


def test_range_only_every_address_answers_exits_3(ip):
    result = run_get_ip("--range", f"{ip(10)}-{ip(11)}")  # on the host all of 127/8 answers
    assert result.returncode == 3
    assert "answers a ping" in result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{net}.20-{net}.10", "comes before"),
        ("{net}.300-{net}.310", "not an IPv4 range"),
        ("10.0.0.0/8", "more than 65536"),
    ],
)
def test_range_is_validated(value, reason, pipeline_network):
    result = run_get_ip("--range", value.format(net=pipeline_network.prefix))
    assert result.returncode == 2
    assert reason in result.stderr


def test_without_range_or_portal_it_says_what_to_give():
    result = run_get_ip()
    assert result.returncode == 2
    assert "--range" in result.stderr and "CALLBACK_URL" in result.stderr
