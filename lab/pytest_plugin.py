"""pytest fixtures for the lab: one lab per test session, each component started on first use.

Tests ask for `lab` and call `lab.info("prometheus")` (or use a component fixture); `lab_settings` points the
portal's Django settings at the lab for one test.
"""

import hashlib
import os
from pathlib import Path

import pytest

from lab import networks
from lab.core import ROOT, Lab

# Tests are hermetic: the settings module must not read the env file of a lab that `make run` left under var/.
# This plugin is loaded with -p, before pytest-django imports the settings.
os.environ["LAB_ENV_FILE"] = ""
# The session has its lab, hence the demo app (settings.DEMO_ENABLED) and its commands.
os.environ.setdefault("DEMO_ENABLED", "true")
# The session's VMs live in its own loopback block, which no other process on the machine uses (lab/networks.py):
# the VM agents of its lab follow that block only, never a fixed address another session's VMs may need.
if not os.environ.get(networks.NETWORKS_ENV):
    networks.on_claim.append(lambda blocks: os.environ.update({networks.NETWORKS_ENV: ",".join(map(str, blocks))}))
    networks.process_block()


def pytest_sessionstart(session):
    """Each test session has a test database of its own, so sessions side by side (CI's two suites, a second run in
    the same checkout) never drop or write each other's.

    SQLite's (a file in WAL mode, vmautoscale/config.py) lives in the session's temp dir, fresh each time: no -wal
    and -shm files of a killed run beside it ("disk I/O error"), and pytest removes old temp dirs. With --reuse-db it
    stays beside the database (var/), where the next run finds it.

    A server's (PostgreSQL) is named after the checkout: Django's default `test_<name>` is the same for every checkout
    on the machine, and a session that starts drops the database another checkout's session is using."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    test = database.setdefault("TEST", {})
    if not database["ENGINE"].endswith("sqlite3"):
        if not test.get("NAME"):
            checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
            test["NAME"] = f"test_{database['NAME']}_{checkout}"
        return
    name = test.get("NAME")
    if not name or name == ":memory:":
        return
    if not session.config.getoption("reuse_db", default=False):
        test["NAME"] = str(session.config._tmp_path_factory.getbasetemp() / Path(name).name)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    instance = Lab(tmp_path_factory.mktemp("lab"))
    yield instance
    instance.stop()


@pytest.fixture
def lab_settings(lab, settings):
    """Django settings pointed at every lab component started so far (start the ones you need first)."""

    def apply(*names):
        for name in names:
            lab.ensure(name)
        for key, value in lab.env().items():
            setattr(settings, key, _typed(key, value))
        return settings

    return apply


def _typed(key, value):
    if value in ("true", "false"):
        return value == "true"
    if key.endswith("_PORT"):
        return int(value)
    return value
