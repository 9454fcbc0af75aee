"""Loopback networks no other process on this machine uses at the same time.

The metrics stand-in's VMs listen on ADDRESS:9100, and every lab on the machine shares that port: two test sessions
(CI runs the SQLite and the PostgreSQL suites side by side) that gave VMs the same address would take each other's
listeners. So a process claims whole blocks 127.X.0.0/16 (X from 1 to 254, at random; 127.0.x.x is `make run`'s
demo) and gives out networks inside its own blocks only, each one once:

- `process_block()`: the process's first block (a test session's VMs all live in it: the VM agent of the session's
  lab follows it);
- `loopback_network(prefixlen=24)`: a network of that size in the process's blocks that it gave out to nobody
  before (a new block when they are full); `loopback_network(16)` is a block of its own.

A claim is an abstract Unix socket named after the block, bound for the life of the process: the kernel refuses the
same name to a second process and frees it when the process ends, however it ends (nothing to clean up). Processes
that run older code claim nothing; they still take random networks, so a clash with them stays unlikely, as before.
"""

import ipaddress
import random
import socket
import threading

BLOCK_PREFIX = 16
# The networks a lab's VM agent follows (lab/wiring.py); a test session sets it to its block (lab/pytest_plugin.py).
NETWORKS_ENV = "LAB_VM_NETWORKS"
CLAIM_NAME = "vmautoscale-loopback-{block}"
_lock = threading.Lock()
_claims = []  # [(block, socket)] in claim order; the sockets stay open until the process exits
_cursor = {}  # block -> next free address (as an int) in it
on_claim = []  # callables run with the list of the process's blocks after each new claim (lab/pytest_plugin.py)


class NoFreeBlock(Exception):
    """Every 127.X.0.0/16 block is claimed by another process."""


def _try_claim(block):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + CLAIM_NAME.format(block=block))
    except OSError:
        sock.close()
        return False
    _claims.append((block, sock))
    for hook in on_claim:
        hook(claimed_blocks())
    return True


def claimed_blocks():
    """The blocks this process holds, in claim order."""
    return [block for block, _sock in _claims]


def claimed_by_someone(block):
    """True when a live process (this one or another) holds the block."""
    block = ipaddress.IPv4Network(str(block))
    if any(claimed == block for claimed, _sock in _claims):
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind("\0" + CLAIM_NAME.format(block=block))
        except OSError:
            return True
    return False


def claim_block():
    """A 127.X.0.0/16 no other live process has claimed, held until this process exits."""
    with _lock:
        return _claim_block_locked()


def _claim_block_locked():
    seconds = list(range(1, 255))
    random.shuffle(seconds)
    for second in seconds:
        block = ipaddress.IPv4Network(f"127.{second}.0.0/{BLOCK_PREFIX}")
        if any(claimed == block for claimed, _sock in _claims):
            continue
        if _try_claim(block):
            return block
    raise NoFreeBlock("every 127.X.0.0/16 (X = 1..254) is claimed by another process")


def process_block():
    """The process's first block (claimed on first use)."""
    with _lock:
        if not _cursor:
            _cursor[_claim_block_locked()] = None
        return next(iter(_cursor))


def loopback_network(prefixlen=24):
    """A loopback network of `prefixlen` (16 to 30) that no other process and no earlier call of this one uses."""
    if prefixlen == BLOCK_PREFIX:
        return claim_block()
    if not BLOCK_PREFIX < prefixlen <= 30:
        raise ValueError(f"prefixlen must be {BLOCK_PREFIX} to 30, not {prefixlen}")
    size = 2 ** (32 - prefixlen)
    process_block()
    with _lock:
        for block in list(_cursor):
            network = _take(block, size, prefixlen)
            if network is not None:
                return network
        block = _claim_block_locked()
        _cursor[block] = None
        return _take(block, size, prefixlen)


def _take(block, size, prefixlen):
    start = int(block.network_address) if _cursor[block] is None else _cursor[block]
    start = -(-start // size) * size  # aligned up to the network's size
    if start + size > int(block.broadcast_address) + 1:
        return None
    _cursor[block] = start + size
    return ipaddress.IPv4Network((start, prefixlen))
