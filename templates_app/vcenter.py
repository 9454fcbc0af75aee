"""The portal's vCenter client, built from settings (the one place templates_app learns where vCenter is)."""

from django.conf import settings

from integrations.vcenter import VcenterClient


def vcenter_client():
    """A VcenterClient for VCENTER_URL / VCENTER_USER / VCENTER_PASSWORD; use it as a context manager."""
    return VcenterClient(
        settings.VCENTER_URL,
        settings.VCENTER_USER,
        settings.VCENTER_PASSWORD,
        verify_tls=settings.VCENTER_VERIFY_TLS,
        timeout=settings.VCENTER_TIMEOUT,
    )
