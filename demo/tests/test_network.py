"""The demo takes a free loopback network when its default is taken, keeps it, says which, and says how to fix."""

import io
import socket

import pytest
from django.core.management import CommandError, call_command

from autoscaling import services as autoscaling_services
from demo import services as demo
from lab.standins.metrics import random_loopback_network

pytestmark = [pytest.mark.lab, pytest.mark.django_db]


@pytest.fixture
def candidates(monkeypatch):
    """Two random networks in place of 127.0.100.0/24 ...: the machine's own `make run` may hold those."""
    nets = [str(random_loopback_network()), str(random_loopback_network())]
    monkeypatch.setattr(demo, "NETWORK_CANDIDATES", nets)
    return nets


@pytest.fixture
def held(lab):
    """hold(address): another program listens on address:9100 (the VM port) for the rest of the test."""
    vm_port = lab.info("metrics")["vm_port"]
    sockets = []

    def hold(address):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((address, vm_port))
        sock.listen()
        sockets.append(sock)
        return f"{address}:{vm_port}"

    yield hold
    for sock in sockets:
        sock.close()


def make_pool(plan, network):
    first, last = demo._replan(plan, network).pool_range
    return autoscaling_services.ip_pool_create(
        data={
            "name": plan.pool_name,
            "network": network,
            "first_address": first,
            "last_address": last,
            "ping_check": False,
        },
    )


def test_a_taken_default_is_skipped_then_the_choice_is_kept(lab, candidates, held):
    plan = demo.DemoPlan(service="net-demo")
    taken = held(demo._replan(plan, candidates[0]).host(2))

    chosen = demo.demo_network_choose(lab=lab, plan=plan)
    assert chosen.network == candidates[1] and not chosen.kept
    assert chosen.skipped == {candidates[0]: [taken]}

    make_pool(plan, chosen.network)  # what the seed stores
    again = demo.demo_network_choose(lab=lab, plan=plan)
    assert again.network == candidates[1] and again.kept and not again.skipped


def test_a_kept_network_taken_later_says_how_to_fix(lab, candidates, held):
    plan = demo.DemoPlan(service="net-demo")
    make_pool(plan, candidates[0])
    held(demo._replan(plan, candidates[0]).host(11))  # an address a scale-out would give
    with pytest.raises(demo.DemoError, match="seed_demo --reset"):
        demo.demo_network_choose(lab=lab, plan=plan)
    with pytest.raises(demo.DemoError, match=f"to move it to {candidates[1]}.*--reset --network"):
        demo.demo_network_choose(lab=lab, plan=plan, requested=candidates[1])


def test_seed_demo_refuses_a_bad_network_and_a_failed_seed_says_how_to_fix(lab, candidates, held):
    with pytest.raises(CommandError, match="--network"):
        call_command("seed_demo", "--run-dir", str(lab.run_dir), "--network", "nope")
    with pytest.raises(CommandError, match="127.0.0.0/8"):
        call_command("seed_demo", "--run-dir", str(lab.run_dir), "--network", "10.1.2.0/24")
    plan = demo.DemoPlan(service="net-demo-cmd")
    held(demo._replan(plan, candidates[0]).host(2))
    out, err = io.StringIO(), io.StringIO()
    args = ["--run-dir", str(lab.run_dir), "--service", plan.service, "--network", candidates[0]]
    call_command("seed_demo", *args, stdout=out, stderr=err)
    assert "The demo was not seeded" in err.getvalue() and "Another program holds" in err.getvalue()
    assert "--reset starts it over" in err.getvalue()
