"""Fixtures of the pipeline tests: a template, a config with an IP pool, a scale-out event with a callback token."""

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaling.models import AutoscalingConfig, IpPool
from events import services
from events.models import ScaleOutEvent
from templates_app.models import VMTemplate

ROOT = Path(__file__).resolve().parents[2]
GET_IP = ROOT / "scripts" / "get-available-ip.py"
_names = itertools.count(1)


def issue_callback_token(event):
    """A callback token for the event, issued the way the portal issues one for a Jenkins build."""
    token = secrets.token_urlsafe(32)
    event.callback_token_hash = services._token_hash(token)
    event.save(update_fields=["callback_token_hash"])
    return token


@pytest.fixture
def make_pool(db):
    def make(first="127.0.100.10", last="127.0.100.20", **fields):
        n = next(_names)
        fields.setdefault("ping_check", False)
        return IpPool.objects.create(
            name=f"pool-{os.getpid()}-{n}",
            network="127.0.100.0/24",
            first_address=first,
            last_address=last,
            gateway=fields.pop("gateway", "127.0.100.1"),
            dns_servers=fields.pop("dns_servers", ["127.0.100.2"]),
            **fields,
        )

    return make


@pytest.fixture
def make_event(db, make_pool):
    """make_event(pool=None, template="...", **config fields) -> (event, callback token)."""

    def make(pool=None, template="DC0_H0_VM0", **config_fields):
        n = next(_names)
        template_row, _created = VMTemplate.objects.get_or_create(
            name=template, defaults={"status": VMTemplate.Status.READY}
        )
        config = AutoscalingConfig.objects.create(
            service_name=f"svc{n}-{os.getpid() % 10000}",
            template=template_row,
            enabled=True,
            ip_pool=pool if pool is not None else make_pool(),
            **config_fields,
        )
        event = ScaleOutEvent.objects.create(
            config=config, service_name=config.service_name, status=ScaleOutEvent.Status.TRIGGERED
        )
        return event, issue_callback_token(event)

    return make


def run_get_ip(*args, env=None, timeout=30):
    """Run scripts/get-available-ip.py as a Jenkins agent would: its own process, no Django."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CALLBACK_URL", "EVENT_ID", "CALLBACK_TOKEN")}
    clean.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(GET_IP), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def portal_env(live_server, event, token):
    return {
        "CALLBACK_URL": f"{live_server.url}/api/events/{event.pk}/callback",
        "EVENT_ID": str(event.pk),
        "CALLBACK_TOKEN": token,
    }


@pytest.fixture(scope="session")
def ping_namespace():
    """A network namespace in which only 127.0.100.10 answers a ping (everything else in 127/8 does not).

    On the host every 127.x address answers, so the "address answers -> skip it" path needs a namespace.
    Yields the ping command prefix to use; skips when namespaces cannot be created here.
    """
    ip = shutil.which("ip")
    if ip is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"vmas-pl-{os.getpid()}"
    setup = [
        [ip, "netns", "add", name],
        [ip, "-n", name, "link", "set", "lo", "up"],
        [ip, "-n", name, "addr", "del", "127.0.0.1/8", "dev", "lo"],
        [ip, "-n", name, "addr", "add", "127.0.100.10/32", "dev", "lo"],
    ]
    for argv in setup:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run([ip, "netns", "del", name], capture_output=True)
            pytest.skip(f"cannot set up a network namespace: {' '.join(argv)}: {result.stderr.strip()}")
    yield f"{ip} netns exec {name} ping"
    with contextlib.suppress(OSError):
        subprocess.run([ip, "netns", "del", name], capture_output=True)
