"""The demo app is installed only with the lab: DEMO_ENABLED decides, and it is off unless something turns it on."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent.parent


def manage_commands(tmp_path, **env):
    """The management commands of a fresh process with this environment (no lab env file)."""
    base = {
        "PATH": "/usr/bin:/bin",
        "LAB_ENV_FILE": "",
        "SECRET_KEY": "demo-switch-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "WEBHOOK_TOKEN": "demo-switch-test-webhook-token",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "help", "--commands"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(("value", "installed"), [(None, False), ("false", False), ("true", True)])
def test_demo_enabled_installs_the_demo_and_its_commands(tmp_path, value, installed):
    commands = manage_commands(tmp_path, **({} if value is None else {"DEMO_ENABLED": value}))
    assert "migrate" in commands
    demo_commands = {"seed_demo", "simulate_load"}
    assert commands & demo_commands == (demo_commands if installed else set())


def test_the_lab_env_file_turns_the_demo_on(tmp_path):
    """A second terminal's `manage.py simulate_load` sees the demo because `python -m lab up` wrote DEMO_ENABLED."""
    from lab.core import Lab

    lab = Lab(tmp_path / "lab")
    lab._save_state()
    assert "DEMO_ENABLED=true" in lab.env_file.read_text().splitlines()
    assert {"seed_demo", "simulate_load"} <= manage_commands(tmp_path, LAB_ENV_FILE=str(lab.env_file))


def test_the_test_session_has_the_demo():
    assert apps.is_installed("demo")
    assert get_commands()["seed_demo"] == "demo"
