"""HTTP for the integrations: the one translation of HTTP failures into IntegrationError, and the transport shared
by the clients that speak HTTP through requests (Prometheus, Alertmanager, F5).

Jenkins goes through python-jenkins (itself on requests) and uses the same translation. Every HTTP failure is
one of these, for every system:

    code            permanent  when
    timeout         no         no answer within the client's time-out
    unreachable     no         no connection, TLS failure, connection closed without an answer, a broken answer
    unauthorized    yes        the credentials were refused (401, 403)
    not_found       yes        no such object (404)
    conflict        yes        the request clashes with the system's state (409)
    invalid         yes        the system refused the request (any other 4xx)
    rate_limited    no         the system asks to slow down (429)
    server_error    no         the system failed (5xx)

A client may name a more precise code (e.g. Jenkins' `not_buildable`) or message; retrying stays decided here.
"""

import re
import warnings

import requests
from urllib3.exceptions import InsecureRequestWarning

from integrations.errors import IntegrationError


def status_code(status):
    """(code, permanent) of an HTTP error status."""
    if status in (401, 403):
        return "unauthorized", True
    if status == 404:
        return "not_found", True
    if status == 409:
        return "conflict", True
    if status == 429:
        return "rate_limited", False
    if status == 408:
        return "timeout", False
    if status >= 500:
        return "server_error", False
    return "invalid", True


def status_error(status, *, system, product, url, doing, detail="", missing=None, hint="", code=None, message=None):
    """The IntegrationError of an HTTP error answer; `product` names the system for an operator ("F5")."""
    kind, permanent = status_code(status)
    detail = short(detail)
    if message is None:
        if kind == "not_found":
            message = f"{product} has no {missing or 'such item'} (HTTP 404 while {doing})"
            message += f": {detail}." if detail else "."
        elif kind == "unauthorized":
            message = f"{product} at {url} refused the credentials (HTTP {status}) while {doing}"
            message += f"; {hint}." if hint else "."
        elif permanent:
            message = f"{product} refused {doing} (HTTP {status})" + (f": {detail}" if detail else ".")
        else:
            message = f"{product} at {url} answered HTTP {status} while {doing}" + (f": {detail}" if detail else ".")
    return IntegrationError(message, system=system, permanent=permanent, code=code or kind)


def timeout_error(*, system, product, url, doing, timeout):
    return IntegrationError(
        f"{product} at {url} did not answer within {timeout:g} s while {doing}.", system=system, code="timeout"
    )


def transport_error(exc, *, system, product, url, doing, timeout, tls_hint=""):
    """The IntegrationError of a requests failure before a usable answer (all retryable)."""
    if isinstance(exc, requests.Timeout):
        return timeout_error(system=system, product=product, url=url, doing=doing, timeout=timeout)
    if isinstance(exc, requests.ConnectionError):
        return IntegrationError(
            f"{product} at {url} could not be reached while {doing}: {connection_reason(exc, tls_hint=tls_hint)}.",
            system=system,
            code="unreachable",
        )
    # A broken answer (bad chunking, bad encoding, too many redirects, ...).
    return IntegrationError(
        f"{product} at {url} sent a broken answer while {doing}: {short(str(exc))}", system=system, code="unreachable"
    )


def connection_reason(exc, *, tls_hint=""):
    """The innermost cause of a connection error in a few words, without urllib3's object reprs."""
    reason = exc
    while reason.__cause__ is not None or reason.__context__ is not None:
        reason = reason.__cause__ or reason.__context__
    text = re.sub(r"<[^>]+>: ", "", str(reason) or reason.__class__.__name__)
    outer = str(exc)
    if "Connection refused" in text or "Connection refused" in outer:
        return "connection refused"
    if "RemoteDisconnected" in outer or "without response" in text:
        return "the connection was closed without an answer"
    if "SSL" in outer or "certificate" in outer.lower():
        return f"TLS failed ({text[:200]})" + (f"; {tls_hint}" if tls_hint else "")
    return text[:300]


def short(text, limit=300):
    """An answer's text as one line: tags and runs of blanks removed."""
    text = re.sub(r"<[^>]+>", " ", text or "")
    return " ".join(text.split())[:limit]


class HttpApiClient:
    """One requests session, one time-out and TLS setting; every request goes through `_send`."""

    SYSTEM = ""  # IntegrationError.system
    PRODUCT = ""  # how an operator names the program, e.g. "Prometheus"
    TLS_HINT = ""  # what to check when TLS fails

    def __init__(self, base_url, timeout=5.0, *, auth=None, verify_tls=True, headers=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.verify_tls = verify_tls
        self._session = requests.Session()
        self._session.verify = verify_tls
        self._session.headers.update(headers or {})
        if auth:
            self._session.auth = auth

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _send(self, method, path, *, what, **kwargs):
        """The choke point: one request; no answer (a time-out, an unreachable host) raises, retryable."""
        try:
            with warnings.catch_warnings():
                if not self.verify_tls:
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                return self._session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise transport_error(
                exc,
                system=self.SYSTEM,
                product=self.PRODUCT,
                url=self.base_url,
                doing=what,
                timeout=self.timeout,
                tls_hint=self.TLS_HINT,
            ) from exc

    def _status_error(self, response, *, what, detail="", **kwargs):
        """The IntegrationError of an error answer of this system."""
        return status_error(
            response.status_code,
            system=self.SYSTEM,
            product=self.PRODUCT,
            url=self.base_url,
            doing=what,
            detail=detail,
            **kwargs,
        )
