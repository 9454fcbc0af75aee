"""pytest fixtures for the lab: one lab per test session, each component started on first use.

Tests ask for `lab` and call `lab.info("prometheus")` (or use a component fixture); `lab_settings` points the
portal's Django settings at the lab for one test.
"""

import contextlib
import hashlib
import os

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
    """The SQLite test database is a file (vmautoscale/config.py) in WAL mode. Django deletes an old one before it
    creates the new one, but not its -wal and -shm files: those of a run that was killed (Ctrl-C, a timeout) would
    make the new database fail with "disk I/O error". The session makes its database afresh: remove all three.

    A server's test database (PostgreSQL) is named after the checkout, as the SQLite one lives in it: Django's
    default `test_<name>` would be the same for every checkout on the machine, and a session that starts drops the
    database another checkout's session (CI beside a helper's run) is using."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3"):
        test = database.setdefault("TEST", {})
        if not test.get("NAME"):
            checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
            test["NAME"] = f"test_{database['NAME']}_{checkout}"
        return
    name = (database.get("TEST") or {}).get("NAME")
    if not name or name == ":memory:" or session.config.getoption("reuse_db", default=False):
        return
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name + suffix)


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
