"""Alertmanager's HTTP API (v2): reload, alerts, status.

All requests go through the shared transport (`integrations.http.HttpApiClient._send`: session, time-out, and
the one translation of HTTP failures); `AlertmanagerClient` turns answers into dataclasses or
`IntegrationError(system="alertmanager")`.
"""

from dataclasses import dataclass, field
from datetime import datetime

from integrations.errors import IntegrationError
from integrations.http import HttpApiClient
from integrations.prometheus import parse_rfc3339

SYSTEM = "alertmanager"


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    labels: dict
    annotations: dict
    starts_at: datetime | None
    ends_at: datetime | None
    status: str  # active, suppressed or unprocessed
    receivers: list[str] = field(default_factory=list)
    silenced_by: list[str] = field(default_factory=list)
    inhibited_by: list[str] = field(default_factory=list)
    generator_url: str = ""


@dataclass(frozen=True)
class AlertmanagerStatus:
    version: str
    uptime: datetime | None
    cluster_status: str  # "disabled" when clustering is off
    config: str  # the loaded alertmanager.yml as Alertmanager renders it (secrets masked)


class AlertmanagerClient(HttpApiClient):
    SYSTEM = SYSTEM
    PRODUCT = "Alertmanager"

    # --- answers: anything but an expected status raises
    def _request(self, method, path, *, what, params=None, json=None, expect=(200,)):
        response = self._send(method, path, what=what, params=params, json=json)
        if response.status_code not in expect:
            raise self._status_error(response, what=what, detail=_reason(response))
        return response

    # --- lifecycle -----------------------------------------------------------------------------------------
    def reload(self):
        """Reload alertmanager.yml. A rejected file raises (permanent) with Alertmanager's reason."""
        response = self._send("POST", "/-/reload", what="reloading")
        if response.status_code == 500:  # Alertmanager's answer to a file it refuses
            raise IntegrationError(
                f"Alertmanager refused the reload (HTTP 500): {_reason(response)}; the previous configuration "
                f"keeps running",
                system=SYSTEM,
                permanent=True,
                code="reload_failed",
            )
        if response.status_code != 200:
            raise self._status_error(response, what="reloading", detail=_reason(response))

    def ready(self) -> bool:
        try:
            self._request("GET", "/-/ready", what="checking readiness")
        except IntegrationError:
            return False
        return True

    def status(self) -> AlertmanagerStatus:
        data = self._request("GET", "/api/v2/status", what="reading the status").json()
        return AlertmanagerStatus(
            version=(data.get("versionInfo") or {}).get("version", ""),
            uptime=parse_rfc3339(data.get("uptime")),
            cluster_status=(data.get("cluster") or {}).get("status", ""),
            config=(data.get("config") or {}).get("original", ""),
        )

    # --- alerts --------------------------------------------------------------------------------------------
    def alerts(
        self,
        filter=None,
        *,
        active=True,
        silenced=True,
        inhibited=True,
        unprocessed=True,
        receiver=None,
    ) -> list[Alert]:
        """Alerts Alertmanager holds; `filter` is a dict of exact label matches, e.g. {"service": "web"}."""
        params = [
            ("active", _flag(active)),
            ("silenced", _flag(silenced)),
            ("inhibited", _flag(inhibited)),
            ("unprocessed", _flag(unprocessed)),
        ]
        params += [("filter", _matcher(name, value)) for name, value in (filter or {}).items()]
        if receiver:
            params.append(("receiver", receiver))
        data = self._request("GET", "/api/v2/alerts", params=params, what="listing alerts").json()
        return [_alert(item) for item in data]

    def post_alerts(self, alerts):
        """Send alerts as Prometheus does (a list of {"labels", "annotations", "startsAt"?, "endsAt"?})."""
        self._request("POST", "/api/v2/alerts", json=list(alerts), what="posting alerts")


def _alert(item):
    status = item.get("status") or {}
    return Alert(
        fingerprint=item.get("fingerprint", ""),
        labels=item.get("labels") or {},
        annotations=item.get("annotations") or {},
        starts_at=parse_rfc3339(item.get("startsAt")),
        ends_at=parse_rfc3339(item.get("endsAt")),
        status=status.get("state", ""),
        receivers=[receiver.get("name", "") for receiver in item.get("receivers") or []],
        silenced_by=list(status.get("silencedBy") or []),
        inhibited_by=list(status.get("inhibitedBy") or []),
        generator_url=item.get("generatorURL", ""),
    )


def _flag(value):
    return "true" if value else "false"


def _matcher(name, value):
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _reason(response):
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason
    if isinstance(body, dict):
        return body.get("error") or body.get("message") or str(body)[:300]
    return str(body)[:300]
