"""Secrets out of every text the portal shows or stores about the monitoring host's files and Jenkins jobs.

Diffs, previews and errors of a provisioning pass are read by people who must not learn the host's credentials,
so each value whose key says it is secret is replaced by SECRET_MASK before it is stored. Redaction goes by the
key's shape, not a list of known fields, so a receiver type or an option added after this was written is caught
too. The shapes come from the configuration references, where these fields are typed `<secret>` or carry
credentials:

- Alertmanager (alertmanager.yml): `smtp_auth_password`, `smtp_auth_secret`, `slack_api_url`, `opsgenie_api_key`,
  `victorops_api_key`, `wechat_api_secret`, `telegram_api_url`...; per receiver `auth_password`, `auth_secret`,
  `routing_key`, `service_key`, `api_key`, `api_secret`, `user_key`, `token`, `bot_token`, and the URLs that
  carry a credential in their path (`api_url`, `url` of webhook receivers, `webhook_url` of Discord, MS Teams...).
- Prometheus (prometheus.yml) and both tools' `http_config`: `basic_auth`, `authorization`, `bearer_token`,
  `oauth2` (`client_secret`), `sigv4` (`access_key`, `secret_key`), `azuread`, `proxy_url` (may hold user:password),
  `http_headers`; service discovery's `password`, `token`, `client_secret`, `application_credential_secret`...
- Jenkins job XML: `<token>`, `<secretToken>`, password parameters' defaults.

A `*_file` key names a file, not a secret, and stays. Everything here is pure text processing: no Django.
"""

import re

import yaml

SECRET_MASK = "********"

# A key whose value is secret: its last word is one of these (api_key, client_secret, smtp_auth_password...).
_SECRET_WORDS = r"password|passwd|passphrase|secrets?|tokens?|credentials?|key|apikey|url|urls|webhook|authorization"
_SECRET_KEY = re.compile(rf"(?:^|[_\-.])(?:{_SECRET_WORDS})$|^(?:{_SECRET_WORDS})$", re.IGNORECASE)
# A key whose whole value (scalars and all beneath) is secret.
_SECRET_BLOCK = re.compile(
    r"^(?:basic_auth|authorization|oauth2|sigv4|azuread|http_headers|headers|proxy_connect_header|credentials|auth)$",
    re.IGNORECASE,
)
# Inside a secret block these say what, not which: kept so a diff still tells what changed.
_KEPT_IN_BLOCK = re.compile(r"^(?:type|username|token_url|scopes|region|_file|.*_file)$", re.IGNORECASE)
# Keys that end in a secret word but name something else.
_NOT_SECRET = re.compile(r"(?:_file|_files|^key_file|^cert_file|^ca_file|^keep_firing_for)$", re.IGNORECASE)

# key: value on one YAML line (block style, or commented out), optionally as a list item, the key optionally quoted.
_YAML_LINE = re.compile(
    r"^(?P<indent>\s*(?:#\s*)?(?:-\s+)*)(?P<q>[\"']?)(?P<key>[A-Za-z0-9_.\-]+)(?P=q)\s*:(?P<rest>.*)$"
)
# key: value pairs inside flow mappings ({username: a, password: b}) and JSON ("password": "b").
_FLOW_PAIR = re.compile(
    r"(?P<pre>[{,]\s*)(?P<q>[\"']?)(?P<key>[A-Za-z0-9_.\-]+)(?P=q)\s*:\s*(?P<value>\"[^\"]*\"|'[^']*'|[^,}\s][^,}]*)"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:]*):(?P<password>[^/@\s]+)@")
_XML_SECRET = re.compile(
    r"<(?P<tag>[A-Za-z]*(?:[Tt]oken|[Pp]assword|[Ss]ecret|[Cc]redentials?))>(?P<value>[^<]+)</(?P=tag)>"
)
# Values shorter than this are not searched for elsewhere in the text (they would mask unrelated words).
_MIN_SEARCHED = 6


def is_secret_key(key):
    key = str(key)
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET.search(key)


def is_secret_block(key):
    return bool(_SECRET_BLOCK.match(str(key)))


def secret_values(data, *, inside_block=False):
    """Every scalar of parsed YAML/JSON `data` that a secret key holds (for masking wherever else it appears)."""
    found = set()
    if isinstance(data, dict):
        for key, value in data.items():
            block = inside_block or is_secret_block(key)
            if isinstance(value, dict | list):
                found |= secret_values(value, inside_block=block)
            elif value not in (None, "") and not isinstance(value, bool):
                kept = inside_block and _KEPT_IN_BLOCK.match(str(key))
                if (is_secret_key(key) or (block and not _KEPT_IN_BLOCK.match(str(key)))) and not kept:
                    found.add(str(value))
    elif isinstance(data, list):
        for item in data:
            found |= secret_values(item, inside_block=inside_block)
    return found


def redact(text, *, known=(), public=()):
    """`text` (YAML, JSON, XML, a diff of them or an error message) with every secret value masked.

    `known` are secrets the caller knows (e.g. the webhook token): masked wherever they appear. A value that starts
    with one of `public` is no secret although its key looks like one (the portal's own webhook URLs).
    """
    if not text:
        return text
    public = tuple(p for p in public if p)
    values = {v for v in _parsed_secrets(text) if not (public and v.startswith(public))} | set(known)
    lines = [_redact_line(line, public) for line in _block_lines(text.splitlines(keepends=True))]
    text = "".join(lines)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{SECRET_MASK}@", text)
    text = _XML_SECRET.sub(lambda m: f"<{m['tag']}>{SECRET_MASK}</{m['tag']}>", text)
    for value in sorted((v for v in values if len(v) >= _MIN_SEARCHED), key=len, reverse=True):
        text = text.replace(value, SECRET_MASK)
    return text


def _parsed_secrets(text):
    """Secret values of `text` when it (or, for a diff, each side of it) parses as YAML."""
    candidates = [text]
    if text.startswith(("--- ", "diff ")) or "\n@@ " in text:
        old = [line[1:] for line in text.splitlines() if line[:1] in ("-", " ") and not line.startswith("---")]
        new = [line[1:] for line in text.splitlines() if line[:1] in ("+", " ") and not line.startswith("+++")]
        candidates = ["\n".join(old), "\n".join(new)]
    found = set()
    for candidate in candidates:
        try:
            for doc in yaml.safe_load_all(candidate):
                found |= secret_values(doc)
        except yaml.YAMLError:
            continue
    return found


def _block_lines(lines):
    """Mark the lines under a secret block (basic_auth:, authorization:...) or a secret multi-line scalar
    (`password: |`): yields (line, masked) pairs, `masked` true for lines whose value is secret."""
    block_indent = None
    for line in lines:
        body, prefix = _strip_diff_marker(line)
        match = _YAML_LINE.match(body)
        indent = len(body) - len(body.lstrip(" -")) if body.strip() else None
        if block_indent is not None and indent is not None and indent <= block_indent:
            block_indent = None
        if block_indent is not None:
            yield line, "block"
            continue
        if match:
            key, rest = match["key"], match["rest"].strip()
            if (is_secret_block(key) and rest in ("", "|", ">", "|-", ">-")) or (
                is_secret_key(key) and rest in ("|", ">", "|-", ">-", "|+", ">+")
            ):
                block_indent = len(match["indent"].replace("-", " "))
        yield line, None


def _strip_diff_marker(line):
    if line[:1] in ("+", "-", " ") and not line.startswith(("+++", "---")):
        return line[1:], line[:1]
    return line, ""


def _redact_line(item, public):
    line, state = item
    body, prefix = _strip_diff_marker(line)
    newline = "\n" if body.endswith("\n") else ""
    body = body[: -1 if newline else None]
    match = _YAML_LINE.match(body)
    if state == "block":
        if match and _KEPT_IN_BLOCK.match(match["key"]):
            return line
        if match and match["rest"].strip():
            return f"{prefix}{match['indent']}{match['q']}{match['key']}{match['q']}: {SECRET_MASK}{newline}"
        if body.strip() and not match:
            return f"{prefix}{body[: len(body) - len(body.lstrip())]}{SECRET_MASK}{newline}"
        return line
    if match:
        key, rest = match["key"], match["rest"].strip()
        if public and rest.strip("\"'").startswith(public):
            return line
        if rest and rest not in ("|", ">", "|-", ">-", "|+", ">+"):
            if is_secret_key(key) or (is_secret_block(key) and rest not in ("{}", "[]")):
                return f"{prefix}{match['indent']}{match['q']}{key}{match['q']}: {SECRET_MASK}{newline}"
    body = _FLOW_PAIR.sub(_flow_pair, body)
    return f"{prefix}{body}{newline}"


def _flow_pair(match):
    if is_secret_key(match["key"]) or is_secret_block(match["key"]):
        return f"{match['pre']}{match['q']}{match['key']}{match['q']}: {SECRET_MASK}"
    return match[0]
