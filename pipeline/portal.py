"""The portal as the pipeline sees it: a few JSON endpoints, authenticated by the event's callback token.

Standard library only (urllib), so get-available-ip.py runs on an agent with nothing but Python installed. The
token comes from the environment (CALLBACK_TOKEN, a password parameter), never from a command line.
"""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from pipeline import contract


class PortalError(Exception):
    """The portal refused or could not be reached; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message, *, status=None, code=None, detail=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail or message


CALLBACK_PATH = "/api/events/{event_id}/callback"
# Answers of a proxy in front of a portal that is not up (the request was not served): waited out like a refusal.
DOWN_STATUSES = (502, 503)
MAX_PAUSE = 5.0


def event_callback_url(*, callback_url=None, portal_url=None, event_id=None):
    """The event's callback URL: CALLBACK_URL as the portal passed it, or built from PORTAL_URL and EVENT_ID."""
    if callback_url:
        return callback_url.rstrip("/")
    if portal_url and event_id:
        return portal_url.rstrip("/") + CALLBACK_PATH.format(event_id=int(event_id))
    return None


class PortalClient:
    """Calls under the event's callback URL. A portal that refuses connections or answers 502 or 503 is being
    restarted or deployed (the request never reached it): waited for up to `down_wait` seconds, so a build in the
    middle of a drain or a clone outlives a restart of the portal. Other 5xx answers and timeouts (the request may
    have been served) are tried `attempts` times."""

    def __init__(self, callback_url, token, *, timeout=10.0, attempts=3, backoff=0.5, down_wait=120.0):
        self.base = callback_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.down_wait = down_wait

    @classmethod
    def from_env(cls, *, callback_url=None, portal_url=None, event_id=None, timeout=None):
        """From flags, else CALLBACK_URL (or PORTAL_URL + EVENT_ID), and CALLBACK_TOKEN (only ever from the
        environment: a command line is visible to every user of the agent); None when incomplete."""
        env = os.environ
        event_id = event_id or env.get("EVENT_ID")
        if callback_url or portal_url:
            url = event_callback_url(callback_url=callback_url, portal_url=portal_url, event_id=event_id)
        else:
            url = event_callback_url(
                callback_url=env.get("CALLBACK_URL"), portal_url=env.get("PORTAL_URL"), event_id=event_id
            )
        token = env.get("CALLBACK_TOKEN")
        if not (url and token):
            return None
        return cls(
            url,
            token,
            timeout=float(timeout or env.get("PORTAL_TIMEOUT") or 10.0),
            down_wait=float(env.get("PORTAL_DOWN_WAIT") or 120.0),
        )

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = f"{self.base}/{path.lstrip('/')}"
        started = time.monotonic()
        failures = 0
        while True:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                payload = _json_or_text(exc.read())
                detail = payload.get("detail") if isinstance(payload, dict) else payload
                code = payload.get("code") if isinstance(payload, dict) else None
                last = PortalError(
                    f"portal answered {exc.code} to {method} {url}: {detail}", status=exc.code, code=code, detail=detail
                )
                if exc.code < 500:
                    raise last from None
                down = exc.code in DOWN_STATUSES
            except (OSError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                last = PortalError(f"portal at {url} could not be reached: {reason}")
                down = isinstance(reason, ConnectionRefusedError)
            failures += 1
            pause = min(self.backoff * 2 ** (failures - 1), MAX_PAUSE)
            waited = time.monotonic() - started
            if down and waited + pause <= self.down_wait:
                time.sleep(pause)
                continue
            if failures >= self.attempts:
                raise last
            time.sleep(pause)

    # The event's progress (events/api: the callback's step and status reports).
    def step_report(self, step, status, message="", details=None):
        """`message`: a contract.StepMessage (sent with its id, shown translated) or a plain text."""
        body = {"step": step, "status": status, **contract.message_fields(message), "details": details or {}}
        return self.request("POST", "step", body)

    def status_report(self, body):
        return self.request("POST", "status", body)

    # The IP pool of the event's config.
    def ip_reserve(self):
        return self.request("POST", "ip/reserve", {})

    def ip_skip(self, address, note=""):
        return self.request("POST", "ip/skip", {"address": address, "note": note})

    def ip_confirm(self, address, vm_name):
        return self.request("POST", "ip/confirm", {"address": address, "vm_name": vm_name})

    def ip_release(self, address=None):
        return self.request("POST", "ip/release", {} if address is None else {"address": address})

    def ip_list(self):
        return self.request("GET", "ip")["results"]

    # The inventory: the instance of each VM, recorded before its clone, then moved along.
    def instance_record(self, address):
        return self.request("POST", "instances", {"address": address})

    def instance_list(self):
        """The event's instances: those it creates, or (a scale-in) those it removes, with VM, IP and F5 member."""
        return self.request("GET", "instances")["results"]

    def instance_report(self, instance_id, *, state=None, reason="", **facts):
        body = {**contract.message_fields(reason, "reason"), **{k: v for k, v in facts.items() if v is not None}}
        if state is not None:
            body["state"] = state
        return self.request("POST", f"instances/{int(instance_id)}", body)


def _json_or_text(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
