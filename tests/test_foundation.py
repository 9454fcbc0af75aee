import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "LAB_ENV_FILE": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "nonsense", "DATABASE_URL='nonsense' is not a database URL"),
        ("JENKINS_URL", "jenkins.example", "JENKINS_URL='jenkins.example' is not a URL"),
        ("MONITORING_SSH_PORT", "twenty-two", "MONITORING_SSH_PORT='twenty-two' is not a whole number"),
        ("VCENTER_VERIFY_TLS", "maybe", "VCENTER_VERIFY_TLS='maybe' is not a boolean"),
    ],
)
def test_malformed_setting_stops_startup_with_one_clear_line(variable, value, expected):
    result = run_manage("check", **{variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vmautoscale: configuration error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_valid_settings_pass_checks():
    result = run_manage("check")
    assert result.returncode == 0, result.stderr


def test_no_model_change_lacks_its_migration():
    """A model changed without `makemigrations` fails CI here (with the app that needs one)."""
    result = run_manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, f"missing migrations (run manage.py makemigrations):\n{result.stdout}{result.stderr}"


@pytest.mark.django_db
def test_healthz_reports_database_and_missing_task_cluster(client):
    response = client.get("/healthz")
    body = response.json()
    assert body["database"] == {"ok": True}
    # No task cluster runs in this test: the portal must say so, not claim to be healthy.
    assert response.status_code == 503
    assert body["task_cluster"]["ok"] is False
    assert "qcluster" in body["task_cluster"]["error"]


@pytest.mark.django_db
def test_api_docs_are_served_without_a_cdn(admin_client):
    response = admin_client.get(reverse("swagger-ui"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn." not in html and "unpkg.com" not in html and "jsdelivr" not in html
    schema = admin_client.get(reverse("schema"))
    assert schema.status_code == 200


@pytest.mark.django_db
def test_admin_login_page(client):
    assert client.get("/admin/login/").status_code == 200


def test_tests_do_not_read_the_env_file_of_a_running_lab(settings):
    # `make run` leaves var/lab/lab.env behind; the test session must not pick its addresses up.
    assert os.environ["LAB_ENV_FILE"] == ""
    assert settings.PROMETHEUS_URL == os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090")
