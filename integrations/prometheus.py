"""Prometheus' HTTP API: reload, rules, alerts, queries, targets.

All requests go through the shared transport (`integrations.http.HttpApiClient._send`: session, time-out, and
the one translation of HTTP failures); `PrometheusClient` turns answers into dataclasses or
`IntegrationError(system="prometheus")`.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import yaml

from integrations.errors import IntegrationError
from integrations.http import HttpApiClient, short

SYSTEM = "prometheus"
LONG_QUERY = 2000


@dataclass(frozen=True)
class RuleAlert:
    labels: dict
    annotations: dict
    state: str
    active_at: datetime | None
    value: float | None


@dataclass(frozen=True)
class Rule:
    name: str
    type: str  # "alerting" or "recording"
    expr: str
    labels: dict
    annotations: dict
    duration: float  # the `for:` in seconds (alerting rules)
    state: str  # inactive, pending or firing; "" for recording rules
    health: str  # ok, err or unknown
    last_error: str
    alerts: list[RuleAlert] = field(default_factory=list)


@dataclass(frozen=True)
class RuleGroup:
    name: str
    file: str
    interval: float
    rules: list[Rule]


@dataclass(frozen=True)
class Series:
    labels: dict
    values: list[tuple[float, float]]  # (unix time, value)

    @property
    def value(self):
        """The last value (the only one for an instant query)."""
        return self.values[-1][1] if self.values else None


@dataclass(frozen=True)
class Target:
    scrape_pool: str
    scrape_url: str
    labels: dict
    discovered_labels: dict
    health: str  # up, down or unknown
    last_error: str
    last_scrape: datetime | None


class PrometheusClient(HttpApiClient):
    SYSTEM = SYSTEM
    PRODUCT = "Prometheus"

    def _request(self, method, path, *, params=None, data=None, what=None):
        return self._send(method, path, params=params, data=data, what=what or f"calling {method} {path}")

    def _api(self, path, *, params=None, what=None, method="GET"):
        """GET (or POST, as a form) an /api/v1 endpoint and return its `data`."""
        if method == "POST":
            response = self._request("POST", path, data=params, what=what)
        else:
            response = self._request("GET", path, params=params, what=what)
        try:
            body = response.json()
        except ValueError:
            body = None
        reason = body.get("error") if isinstance(body, dict) else response.text
        if response.status_code >= 400:
            # Prometheus names the kind of a refused query (bad_data, execution, ...): more precise than the status.
            error_type = body.get("errorType") if isinstance(body, dict) else None
            raise self._status_error(response, what=what or path, detail=reason, code=error_type or None)
        if not isinstance(body, dict) or body.get("status") != "success":
            raise IntegrationError(
                f"Prometheus at {self.base_url} sent an answer that is not its API's while {what or path}: "
                f"{short(str(reason))}",
                system=SYSTEM,
                code="bad_response",
            )
        return body.get("data")

    # --- lifecycle -----------------------------------------------------------------------------------------
    def reload(self):
        """Reload config and rule files. A rejected file raises (permanent) with Prometheus' reason."""
        response = self._request("POST", "/-/reload", what="reloading")
        if response.status_code == 200:
            return
        reason = response.text.strip() or response.reason
        if response.status_code == 403:
            raise IntegrationError(
                "Prometheus does not allow reloads: start it with --web.enable-lifecycle",
                system=SYSTEM,
                permanent=True,
                code="lifecycle_disabled",
            )
        raise IntegrationError(
            f"Prometheus refused the reload (HTTP {response.status_code}): {reason}; the previous configuration "
            f"keeps running",
            system=SYSTEM,
            permanent=response.status_code == 500,
            code="reload_failed",
        )

    def ready(self) -> bool:
        try:
            return self._request("GET", "/-/ready", what="checking readiness").status_code == 200
        except IntegrationError:
            return False

    def config_reload_successful(self) -> bool:
        """Whether the last config (re)load succeeded (prometheus_config_last_reload_successful)."""
        data = self._api("/api/v1/status/runtimeinfo", what="reading the runtime info")
        return bool(data.get("reloadConfigSuccess"))

    def evaluation_interval(self) -> float | None:
        """Seconds between rule evaluations (the loaded config's global `evaluation_interval`; Prometheus' default
        is 1 m); None when the config does not say or cannot be parsed."""
        data = self._api("/api/v1/status/config", what="reading the config")
        try:
            loaded = yaml.safe_load(data.get("yaml") or "") or {}
        except yaml.YAMLError:
            return None
        return parse_duration(
            ((loaded.get("global") or {}) if isinstance(loaded, dict) else {}).get("evaluation_interval")
        )

    # --- rules and alerts ----------------------------------------------------------------------------------
    def rules(self, type=None) -> list[RuleGroup]:
        params = {"type": {"alerting": "alert", "recording": "record"}.get(type, type)} if type else None
        data = self._api("/api/v1/rules", params=params, what="listing rules")
        groups = []
        for group in data.get("groups", []):
            rules = [
                Rule(
                    name=rule.get("name", ""),
                    type=rule.get("type", ""),
                    expr=rule.get("query", ""),
                    labels=rule.get("labels") or {},
                    annotations=rule.get("annotations") or {},
                    duration=float(rule.get("duration") or 0),
                    state=rule.get("state", ""),
                    health=rule.get("health", ""),
                    last_error=rule.get("lastError", ""),
                    alerts=[_rule_alert(alert) for alert in rule.get("alerts") or []],
                )
                for rule in group.get("rules", [])
            ]
            groups.append(
                RuleGroup(
                    name=group.get("name", ""),
                    file=group.get("file", ""),
                    interval=float(group.get("interval") or 0),
                    rules=rules,
                )
            )
        return groups

    def alerts(self) -> list[RuleAlert]:
        data = self._api("/api/v1/alerts", what="listing alerts")
        return [_rule_alert(alert) for alert in data.get("alerts", [])]

    # --- queries -------------------------------------------------------------------------------------------
    def query(self, expr, time=None) -> list[Series]:
        params = {"query": expr}
        if time is not None:
            params["time"] = _timestamp(time)
        # A long query (one for many services) goes as a form: no URL length limit on the way.
        if len(expr) > LONG_QUERY:
            what = f"running a query of {len(expr)} characters ({expr[:80]!r}...)"
            return _series(self._api("/api/v1/query", params=params, what=what, method="POST"))
        return _series(self._api("/api/v1/query", params=params, what=f"running the query {expr!r}"))

    def parse_error(self, expr) -> str | None:
        """Prometheus' own parser on `expr`: its message when Prometheus refuses the expression (bad_data), else None.

        The expression is evaluated at the Unix epoch, where no data is kept, so the parse is all it costs.
        IntegrationError when Prometheus cannot be asked.
        """
        what = "checking an expression"
        response = self._request("POST", "/api/v1/query", data={"query": expr, "time": "0"}, what=what)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 400 and isinstance(body, dict) and body.get("errorType") == "bad_data":
            return str(body.get("error") or "bad_data")
        if response.status_code >= 400:
            detail = body.get("error") if isinstance(body, dict) else response.text
            raise self._status_error(response, what=what, detail=detail)
        return None

    def query_range(self, expr, start, end, step) -> list[Series]:
        params = {"query": expr, "start": _timestamp(start), "end": _timestamp(end), "step": _seconds(step)}
        return _series(self._api("/api/v1/query_range", params=params, what=f"running the range query {expr!r}"))

    def targets(self, state="active") -> list[Target]:
        data = self._api("/api/v1/targets", params={"state": state}, what="listing targets")
        return [
            Target(
                scrape_pool=target.get("scrapePool", ""),
                scrape_url=target.get("scrapeUrl", ""),
                labels=target.get("labels") or {},
                discovered_labels=target.get("discoveredLabels") or {},
                health=target.get("health", ""),
                last_error=target.get("lastError", ""),
                last_scrape=parse_rfc3339(target.get("lastScrape")),
            )
            for target in data.get("activeTargets", [])
        ]


def _rule_alert(alert):
    value = alert.get("value")
    return RuleAlert(
        labels=alert.get("labels") or {},
        annotations=alert.get("annotations") or {},
        state=alert.get("state", ""),
        active_at=parse_rfc3339(alert.get("activeAt")),
        value=float(value) if value not in (None, "") else None,
    )


def _series(data):
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        return [Series(labels={}, values=[(float(result[0]), _float(result[1]))])]
    series = []
    for item in result or []:
        points = item.get("values") or ([item["value"]] if "value" in item else [])
        series.append(Series(labels=item.get("metric") or {}, values=[(float(t), _float(v)) for t, v in points]))
    return series


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _timestamp(value):
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return f"{value.timestamp():.3f}"
    return f"{float(value):.3f}"


def _seconds(value):
    if hasattr(value, "total_seconds"):
        return f"{value.total_seconds():g}"
    return f"{float(value):g}"


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration(text):
    """Seconds of a Prometheus duration ("15s", "1m", "1h30m", "500ms"); None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(f"{n}{unit}" for n, unit in parts) != text:
        return None
    return float(sum(int(n) * _DURATION_UNITS[unit] for n, unit in parts))


def parse_rfc3339(text):
    """Prometheus' RFC 3339 times (nanoseconds, Z); None for missing or the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    text = text.replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:
        digits = rest[: next((i for i, c in enumerate(rest) if not c.isdigit()), len(rest))]
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
