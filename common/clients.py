"""Every external client the portal uses, built from settings: the one place that knows where each system is.

The integrations are imported inside each factory, so that the portal still starts (and answers with the
reason) when one client library cannot be imported. Each client is a context manager; tests point the
settings at the lab.
"""

from django.conf import settings

# Read-only dashboard queries must not hold a page for long; provisioning may wait longer for a reload.
QUERY_TIMEOUT = 5.0
RELOAD_TIMEOUT = 10.0


def vcenter_client():
    """A VcenterClient for VCENTER_URL / VCENTER_USER / VCENTER_PASSWORD."""
    from integrations.vcenter import VcenterClient

    return VcenterClient(
        settings.VCENTER_URL,
        settings.VCENTER_USER,
        settings.VCENTER_PASSWORD,
        verify_tls=settings.VCENTER_VERIFY_TLS,
        timeout=settings.VCENTER_TIMEOUT,
    )


def jenkins_client():
    """A JenkinsClient for JENKINS_URL with the portal's user and API token."""
    from integrations.jenkins import JenkinsClient

    return JenkinsClient(
        settings.JENKINS_URL, settings.JENKINS_USER, settings.JENKINS_TOKEN, timeout=float(settings.JENKINS_TIMEOUT)
    )


def prometheus_client(*, timeout=QUERY_TIMEOUT):
    from integrations.prometheus import PrometheusClient

    return PrometheusClient(settings.PROMETHEUS_URL, timeout=timeout)


def alertmanager_client(*, timeout=QUERY_TIMEOUT):
    from integrations.alertmanager import AlertmanagerClient

    return AlertmanagerClient(settings.ALERTMANAGER_URL, timeout=timeout)


def f5_client():
    """An F5Client for F5_URL with the portal's user (it logs in for a token on first use)."""
    from integrations.f5 import F5Client

    return F5Client(
        settings.F5_URL,
        settings.F5_USER,
        settings.F5_PASSWORD,
        verify_tls=settings.F5_VERIFY_TLS,
        timeout=float(settings.F5_TIMEOUT),
    )


def ssh_target():
    """Where the monitoring host is and how the portal logs in (key and known hosts, never a password)."""
    from integrations.ssh import SshTarget

    return SshTarget(
        host=settings.MONITORING_SSH_HOST,
        port=int(settings.MONITORING_SSH_PORT),
        user=settings.MONITORING_SSH_USER,
        key_file=settings.MONITORING_SSH_KEY_FILE,
        known_hosts_file=settings.MONITORING_SSH_KNOWN_HOSTS,
        timeout=float(settings.MONITORING_SSH_TIMEOUT),
    )


def ssh_client():
    """An SshClient to the monitoring host (connects on first use)."""
    from integrations.ssh import SshClient

    return SshClient(ssh_target())
