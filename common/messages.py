"""Messages stored as a message id and its parameters, and rendered when shown, in the reader's language.

A decision's reason, a step's message or an instance change's reason is written once and read by people with
different languages. Writers pass a `Message` (a gettext_noop-marked id and its parameters) where they used to pass
a translated string; `stored(value, "reason")` turns it into the row's fields: the text as rendered now (kept for
searching, logs and the rows written before the ids were stored), `reason_msgid` and `reason_params`.
`shown(row, "reason")` renders the id in the active language (the request's: admin, API, dashboard) and falls back
to the stored text, which is all that messages from vCenter, Jenkins or Prometheus have: those stay as they came.

A parameter may itself be a `Message` (a step name, a status label), or a `Joined` list of them: it is rendered in
the same language. Code that knows no Django (autoscaling/policy.py) nests one in its stored form,
{"msgid": ..., "params": {...}}.
"""

from dataclasses import dataclass, field

from django.utils.translation import gettext

NESTED = "msgid"
JOINED = "join"


@dataclass(frozen=True)
class Message:
    msgid: str  # marked with gettext_noop (or the pipeline's own marker, see pipeline/contract.py)
    params: dict = field(default_factory=dict)

    def __str__(self):
        return render(self.msgid, _stored_params(self.params))


@dataclass(frozen=True)
class Joined:
    """Parts of a message (Messages or texts) shown one after the other, `separator` between them."""

    items: tuple
    separator: str = "; "

    def __str__(self):
        return str(_shown_value(_stored_value(self)))


def _stored_value(value):
    if isinstance(value, Message):
        return {NESTED: value.msgid, "params": _stored_params(value.params)}
    if isinstance(value, dict) and isinstance(value.get(NESTED), str):  # already stored (the pipeline sends these)
        params = value.get("params")
        return {NESTED: value[NESTED], "params": _stored_params(params if isinstance(params, dict) else {})}
    if isinstance(value, Joined):
        return {JOINED: value.separator, "items": [_stored_value(item) for item in value.items]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # a lazy translation, a Decimal, an address: its text now


def _stored_params(params):
    return {str(key): _stored_value(value) for key, value in (params or {}).items()}


def _shown_value(value):
    if isinstance(value, dict) and NESTED in value:
        return render(value[NESTED], value.get("params"))
    if isinstance(value, dict) and JOINED in value:
        return str(value[JOINED]).join(str(_shown_value(item)) for item in value.get("items") or ())
    return value


def render(msgid, params=None, fallback=""):
    """The message in the active language; `fallback` (or the id) when it cannot be formatted with `params`."""
    if not msgid:
        return fallback
    try:
        return gettext(msgid) % {key: _shown_value(value) for key, value in (params or {}).items()}
    except (KeyError, ValueError, TypeError):
        return fallback or msgid


def stored(value, name):
    """The model fields `name`, `name_msgid` and `name_params` for a Message or a plain text."""
    if isinstance(value, Message):
        return {name: str(value), f"{name}_msgid": value.msgid, f"{name}_params": _stored_params(value.params)}
    return {name: "" if value is None else str(value), f"{name}_msgid": "", f"{name}_params": {}}


def shown(row, name):
    """Field `name` of a row in the active language: its message id rendered, else its stored text."""
    return render(getattr(row, f"{name}_msgid", ""), getattr(row, f"{name}_params", None), getattr(row, name))


def reported(text, msgid="", params=None):
    """What a caller without Django (the pipeline) reported: its message id and parameters when it sent them and
    they make a message, else its text as it came."""
    if not msgid:
        return text
    message = Message(msgid, dict(params or {}))
    try:
        msgid % {key: _shown_value(value) for key, value in _stored_params(message.params).items()}
    except (KeyError, ValueError, TypeError):
        return text
    return message
