"""Production settings: the documented environment (scripts/deploy/vmautoscale.env.template, filled in as an
operator does) passes `check --deploy`; a missing variable stops start-up naming it instead of falling back to the
lab's credentials; /healthz shows no driver text; the API docs need a log-in; failed log-ins are throttled; API
tokens are stored hashed."""

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from knox.models import AuthToken

from lab.core import free_port

ROOT = Path(__file__).resolve().parent.parent
ENV_TEMPLATE = ROOT / "scripts" / "deploy" / "vmautoscale.env.template"


def production_env(tmp_path, **overrides):
    """The env template with every CHANGE-ME and @GENERATED@ filled in, as the operations guide tells."""
    env = {}
    for line in ENV_TEMPLATE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, value = line.split("=", 1)
        if value == "@GENERATED@":
            value = secrets.token_urlsafe(48)
        elif value == "CHANGE-ME":
            value = {
                "ALLOWED_HOSTS": "portal.example.internal,127.0.0.1",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "MONITORED_NETWORKS": "10.20.0.0/16",
            }.get(name, f"https://127.0.0.1:{free_port()}" if name.endswith("_URL") else f"value-of-{name.lower()}")
        env[name] = value
    env.update(overrides)
    return {"PATH": os.environ["PATH"], **{k: v for k, v in env.items() if v is not None}}


def manage(env, *argv):
    return subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path):
    done = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_check_deploy_warns_without_the_production_switch(tmp_path):
    """The test above means something: the same environment in lab mode (no HTTPS settings) fails."""
    done = manage(production_env(tmp_path, PRODUCTION="false"), "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    assert "security.W004" in done.stderr + done.stdout  # SECURE_HSTS_SECONDS
    assert "security.W008" in done.stderr + done.stdout  # SECURE_SSL_REDIRECT


@pytest.mark.parametrize("name", ["VCENTER_PASSWORD", "F5_PASSWORD", "JENKINS_TOKEN", "SECRET_KEY", "DATABASE_URL"])
def test_production_refuses_to_start_without_a_credential(tmp_path, name):
    env = production_env(tmp_path)
    del env[name]
    done = manage(env, "check")
    assert done.returncode == 2
    assert f"{name} is not set" in done.stderr
    assert "Traceback" not in done.stderr
    # Set but empty is missing too (an EnvironmentFile line `NAME=`).
    done = manage({**env, name: ""}, "check")
    assert done.returncode == 2
    assert f"{name} is not set" in done.stderr


def test_a_value_left_as_change_me_stops_start_up(tmp_path):
    done = manage(production_env(tmp_path, VCENTER_USER="CHANGE-ME"), "check")
    assert done.returncode == 2
    assert "VCENTER_USER is still CHANGE-ME" in done.stderr


def test_lab_mode_still_starts_with_no_environment(tmp_path):
    env = {"PATH": os.environ["PATH"], "LAB_ENV_FILE": "", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    done = manage(env, "check")
    assert done.returncode == 0, done.stderr


SHELL_GET = """
import json
from django.test import Client
answer = Client().get({path!r}, secure=True, HTTP_HOST="127.0.0.1")
print(json.dumps({{"status": answer.status_code, "body": answer.content.decode()}}))
"""


def shell_get(env, path):
    import json

    done = manage(env, "shell", "-c", SHELL_GET.format(path=path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_healthz_shows_no_database_error_text(tmp_path):
    """A real PostgreSQL driver error (nothing listens on the port): its text names the host, port and user."""
    port = free_port()
    env = production_env(tmp_path, DATABASE_URL=f"postgres://secretuser:secretpass@127.0.0.1:{port}/vmas_nowhere")
    answer, log = shell_get(env, "/healthz")
    assert answer["status"] == 503
    assert '"ok": false' in answer["body"]
    for leaked in (str(port), "secretuser", "127.0.0.1", "connection"):
        assert leaked not in answer["body"]
    assert "the database does not answer" in answer["body"]
    assert str(port) in log  # the operator still finds the cause in the log


def test_api_docs_need_a_log_in_unless_made_public(tmp_path, client, django_user_model):
    for path in ("/api/schema/", "/api/docs/", "/api/redoc/"):
        assert client.get(path).status_code in (401, 403), path
    client.force_login(django_user_model.objects.create_user("reader", password="pw-123456789"))
    assert client.get("/api/schema/").status_code == 200
    answer, _ = shell_get(production_env(tmp_path, API_DOCS_PUBLIC="true"), "/api/schema/")
    assert answer["status"] == 200
    answer, _ = shell_get(production_env(tmp_path), "/api/schema/")
    assert answer["status"] in (401, 403)


@pytest.fixture
def operator(django_user_model):
    """A staff user in the operator role (the API answers only staff users whose role holds the permission)."""
    from django.contrib.auth.models import Group

    from access import roles

    user = django_user_model.objects.create_user("operator", password="right-password-123", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.OPERATOR))
    return user


def test_failed_admin_log_ins_lock_the_user_out(client, operator, settings):
    login = "/admin/login/?next=/admin/"
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(login, {"username": "operator", "password": "wrong", "next": "/admin/"})
    locked = client.post(login, {"username": "operator", "password": "right-password-123", "next": "/admin/"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another user is not affected.
    get_user_model().objects.create_user("other", password="other-password-123", is_staff=True)
    other = client.post(login, {"username": "other", "password": "other-password-123", "next": "/admin/"})
    assert other.status_code == 302


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_failed_basic_auth_on_the_api_locks_the_user_out(client, operator, settings):
    assert (
        client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=basic("operator", "right-password-123")).status_code
        == 200
    )
    for _ in range(settings.AXES_FAILURE_LIMIT):
        wrong = client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=basic("operator", "wrong"))
        assert wrong.status_code in (401, 403)
    locked = client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=basic("operator", "right-password-123"))
    assert locked.status_code in (401, 403, 429)
    assert locked["Content-Type"].startswith("application/json")  # the API's error shape, not a page
    assert set(locked.json()) == {"detail", "code", "errors"}
    call_command("axes_reset_username", "operator")
    assert (
        client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=basic("operator", "right-password-123")).status_code
        == 200
    )


def test_api_tokens_are_stored_hashed_and_the_documented_command_still_makes_them(client, operator, capsys):
    call_command("drf_create_token", "operator")
    out = capsys.readouterr().out
    assert out.startswith("Generated token ") and out.rstrip().endswith(" for user operator")
    key = out.split()[2]
    answer = client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=f"Token {key}")
    assert answer.status_code == 200
    assert client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=f"Token {key[:-1]}x").status_code in (401, 403)
    # Nothing in the token table holds the key itself: only a digest and a short lookup prefix.
    (row,) = AuthToken.objects.filter(user=operator).values()
    assert key not in repr(row)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        assert key not in repr(cursor.fetchall())
    # --reset: the earlier key stops working.
    call_command("drf_create_token", "operator", "--reset")
    assert client.get("/api/autoscaling/configs", HTTP_AUTHORIZATION=f"Token {key}").status_code in (401, 403)
