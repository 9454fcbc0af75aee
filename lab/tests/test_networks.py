"""Two test sessions on one machine never share a loopback network or a lab port (CI runs two side by side)."""

import ipaddress
import socket
import subprocess
import sys

from lab import networks, wiring
from lab.components import metrics
from lab.core import ROOT, Lab, free_port, group_members
from lab.standins.metrics import random_loopback_network

OTHER_PROCESS = """
import ipaddress, sys
from lab import networks, wiring
ours = [ipaddress.IPv4Network(n) for n in sys.argv[1:]]
print(all(networks.claimed_by_someone(n) for n in ours))
taken = [networks.loopback_network(16) for _ in range(5)] + [networks.loopback_network(24) for _ in range(5)]
print(any(t.overlaps(n) for t in taken for n in ours))
"""


def test_a_process_never_gives_out_a_network_twice_nor_one_another_process_holds():
    given = [random_loopback_network() for _ in range(300)] + [random_loopback_network(prefixlen=17)]
    given.append(random_loopback_network(prefixlen=16))
    assert all(n.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) for n in given)
    assert not any(n.subnet_of(ipaddress.IPv4Network("127.0.0.0/16")) for n in given)  # make run's demo
    assert not any(a.overlaps(b) for i, a in enumerate(given) for b in given[i + 1 :])
    blocks = {ipaddress.IPv4Network((int(n.network_address) & 0xFFFF0000, 16)) for n in given}
    assert len(blocks) >= 3  # 300 /24s do not fit in one block: a second one was claimed, and the /16 is a third
    assert blocks <= set(networks.claimed_blocks())  # the session's earlier tests may have filled its first block
    # The session's VM agents follow all of them (lab/pytest_plugin.py, lab/wiring.py).
    assert set(map(str, blocks)) <= set(wiring.agent_networks())

    # Another process (a second test session) sees every block of ours claimed and gets none of them.
    held = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, *map(str, blocks)], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert held.stdout.split() == ["True", "False"], held.stderr


def test_a_block_is_free_again_once_its_process_is_gone():
    claimed = subprocess.run(
        [sys.executable, "-c", "from lab import networks; print(networks.loopback_network(16))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    block = ipaddress.IPv4Network(claimed.stdout.strip())
    assert not networks.claimed_by_someone(block)


def test_a_component_whose_free_port_was_taken_meanwhile_starts_on_another(tmp_path, monkeypatch):
    """free_port() is free when asked; another session may bind it before the component does."""
    stolen = socket.create_server(("127.0.0.1", 0))
    ports = iter([stolen.getsockname()[1]])
    monkeypatch.setattr(metrics, "free_port", lambda: next(ports, None) or free_port())
    lab = Lab(tmp_path / "lab")
    try:
        info = lab.ensure("metrics")
        assert info["url"] != f"http://127.0.0.1:{stolen.getsockname()[1]}"
        assert "address already in use" in lab.log_tail("metrics", lines=50).lower()
        assert lab.status()["metrics"][0]
    finally:
        stolen.close()
        lab.stop()
    assert not any(group_members(pid) for pid in info["pids"])
