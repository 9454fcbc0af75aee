"""Secrets the operators keep in alertmanager.yml and prometheus.yml never come back out of the portal (diffs in the
API, the admin, the logs), only administrators see the diff of the parts the portal does not manage, and a file the
portal rewrites on the monitoring host (the lab's real sshd) keeps its mode and owner."""

import logging
import os
import re
import stat
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Permission
from django.urls import reverse

from autoscaling import services
from autoscaling.models import ProvisioningRun

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

PLANTED = re.compile(r"PLANTED-[a-z]+-\d{4}")


def plant(alertmanager_text, prometheus_text):
    """The files with an operator's secrets added in the parts the portal does not manage (all addresses loopback)."""
    am = yaml.safe_load(alertmanager_text)
    am.setdefault("global", {}).update(
        {
            "smtp_smarthost": "127.0.0.1:9",
            "smtp_from": "alertmanager@example.internal",
            "smtp_auth_username": "alerts",
            "smtp_auth_password": "PLANTED-smtp-0001",
            "slack_api_url": "http://127.0.0.1:9/services/T000/B000/PLANTED-slack-0002",
        }
    )
    am["receivers"].append(
        {
            "name": "ops-team",
            "webhook_configs": [
                {
                    "url": "http://127.0.0.1:9/hooks/PLANTED-hook-0003",
                    "http_config": {"basic_auth": {"username": "ops", "password": "PLANTED-basic-0004"}},
                },
                {
                    "url": "http://127.0.0.1:9/other",
                    "http_config": {"authorization": {"type": "Bearer", "credentials": "PLANTED-bearer-0005"}},
                },
            ],
            "pagerduty_configs": [{"url": "http://127.0.0.1:9/pd", "routing_key": "PLANTED-pd-0006"}],
            "slack_configs": [{"channel": "#ops"}],
        }
    )
    prom = yaml.safe_load(prometheus_text)
    prom["scrape_configs"] = prom.pop("scrape_configs", None) or []  # last: the flow-style job below joins it
    prom["scrape_configs"].append(
        {
            "job_name": "ops-secured",
            "static_configs": [{"targets": ["127.0.0.1:9"]}],
            "basic_auth": {"username": "scraper", "password": "PLANTED-scrape-0007"},
        }
    )
    # Flow style and a comment, as hand-written files have: the diff shows these lines as they are.
    return (
        yaml.safe_dump(am, sort_keys=False) + "# token: PLANTED-comment-0008\n",
        yaml.safe_dump(prom, sort_keys=False)
        + "- job_name: ops-flow\n  static_configs: [{targets: ['127.0.0.1:9']}]\n"
        + "  authorization: {credentials: PLANTED-flow-0009}\n",
    )


@pytest.fixture
def planted(monitoring):
    am_path, prom_path = Path(monitoring.ALERTMANAGER_CONFIG_FILE), Path(monitoring.PROMETHEUS_CONFIG_FILE)
    originals = {path: (path.read_text(), stat.S_IMODE(path.stat().st_mode)) for path in (am_path, prom_path)}
    am_text, prom_text = plant(am_path.read_text(), prom_path.read_text())
    am_path.write_text(am_text)
    prom_path.write_text(prom_text)
    am_path.chmod(0o640)
    yield am_path, prom_path
    for path, (text, mode) in originals.items():
        path.write_text(text)
        path.chmod(mode)
    services.provisioning_run(reason="test cleanup of planted secrets")


def test_a_secret_planted_in_the_host_files_appears_in_no_api_response_admin_page_or_log(
    planted, make_config, client, django_user_model, caplog
):
    caplog.set_level(logging.DEBUG)
    am_path, _prom_path = planted
    config = make_config("secret-web", monitored_instances=["127.0.0.1:9100"])
    run = services.provisioning_run(reason="test")
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    assert "ops-team" in am_path.read_text()  # the unmanaged receiver was kept...
    assert "PLANTED-basic-0004" in am_path.read_text()  # ...with its secrets, on the host only

    run.refresh_from_db()
    # The diffs mean something: the portal's receiver is in the managed diff, the whole file in the other.
    assert "vmautoscale-secret-web" in run.diff
    assert "ops-team" not in run.diff
    assert "ops-team" in run.unmanaged_diff and "********" in run.unmanaged_diff
    stored = [run.diff, run.unmanaged_diff, run.error]
    assert not PLANTED.findall("\n".join(stored))

    admin = django_user_model.objects.create_superuser("boss", password="pw-boss-123456")
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123456", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_provisioningrun", "view_autoscalingconfig"])
    )
    pages = {}
    for user in (admin, viewer):
        client.force_login(user)
        for url in (
            "/api/autoscaling/provisioning-runs",
            f"/api/autoscaling/provisioning-runs/{run.pk}",
            reverse("admin:autoscaling_provisioningrun_changelist"),
            reverse("admin:autoscaling_provisioningrun_change", args=[run.pk]),
            "/api/autoscaling/configs?service_name=secret-web",
            f"/api/autoscaling/configs/{config.pk}/preview",
            reverse("admin:autoscaling_autoscalingconfig_change", args=[config.pk]),
        ):
            answer = client.get(url)
            assert answer.status_code == 200, (user, url)
            pages[(user.username, url)] = answer.content.decode()
    leaks = {key: PLANTED.findall(text) for key, text in pages.items() if PLANTED.findall(text)}
    assert not leaks
    assert not PLANTED.findall("\n".join(record.getMessage() for record in caplog.records))

    detail = f"/api/autoscaling/provisioning-runs/{run.pk}"
    client.force_login(admin)
    assert "ops-team" in client.get(detail).json()["unmanaged_diff"]
    client.force_login(viewer)
    body = client.get(detail).json()
    assert body["unmanaged_diff"] is None
    assert "vmautoscale-secret-web" in body["diff"]
    change_page = pages[("viewer", reverse("admin:autoscaling_provisioningrun_change", args=[run.pk]))]
    assert "ops-team" not in change_page
    assert "ops-team" in pages[("boss", reverse("admin:autoscaling_provisioningrun_change", args=[run.pk]))]


def test_a_rewritten_file_keeps_its_mode_and_owner(planted, make_config):
    am_path, _ = planted
    group = 4 if os.geteuid() == 0 else os.getegid()  # "adm" on Debian: a group other than the owner's
    os.chown(am_path, os.geteuid(), group)
    before = am_path.stat()
    assert stat.S_IMODE(before.st_mode) == 0o640
    make_config("mode-web", monitored_instances=["127.0.0.1:9100"])
    run = services.provisioning_run(reason="test")
    assert run.status == ProvisioningRun.Status.CHANGED, run.error
    after = am_path.stat()
    assert after.st_ino != before.st_ino  # replaced by a rename, not edited in place
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
