"""The HTTP transport shared by the Prometheus and Alertmanager clients: one session, one time-out, and network
failures turned into IntegrationError. Each client keeps its own reading of the answers."""

import requests

from integrations.errors import IntegrationError


class HttpApiClient:
    SYSTEM = ""  # IntegrationError.system and the prefix of messages
    PRODUCT = ""  # how an operator names the program, e.g. "Prometheus"

    def __init__(self, base_url, timeout=5.0, *, auth=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if auth:
            self._session.auth = auth

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _send(self, method, path, *, what, **kwargs):
        """The choke point: one request; a time-out or an unreachable host raises (retryable)."""
        try:
            return self._session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise IntegrationError(
                f"{self.SYSTEM}: {what} timed out after {self.timeout:g}s ({self.base_url})",
                system=self.SYSTEM,
                code="timeout",
            ) from exc
        except requests.RequestException as exc:
            raise IntegrationError(
                f"{self.SYSTEM}: cannot reach {self.base_url} ({exc.__class__.__name__}); is {self.PRODUCT} running?",
                system=self.SYSTEM,
                code="unreachable",
            ) from exc
