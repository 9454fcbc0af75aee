"""Reading the portal's settings from the environment.

Every setting the portal takes comes from an environment variable (or, for the local lab, from the env file the
lab writes). A missing or malformed value is reported as one clear line and start-up stops: an operator should
never have to read a traceback to learn that a URL has a typo.
"""

import ipaddress
import json
import re
import secrets
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import environ

# The deployment's env template marks every value an operator must fill in with this.
PLACEHOLDER = "CHANGE-ME"
# Prometheus label names (names starting with __ are Prometheus' own).
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and says how to fix it."""


class Settings:
    """Typed reads of environment variables, each failing with a message that names the variable."""

    def __init__(self, env_file=None):
        self.env = environ.Env()
        if env_file and Path(env_file).is_file():
            # Real environment variables win over the lab's file (read_env never overwrites).
            environ.Env.read_env(str(env_file), overwrite=False)

    def str(self, name, default=None):
        """A string; `default=None` makes the variable required (empty counts as not set)."""
        value = self.env.str(name, default=default)
        if value is None or (default is None and value.strip() == ""):
            raise ConfigError(f"{name} is not set: set it in the environment (see docs/operations-guide.md).")
        if value.strip() == PLACEHOLDER:
            raise ConfigError(f"{name} is still {PLACEHOLDER}: replace it with the real value.")
        return value

    def bool(self, name, default):
        raw = self.env.str(name, default="")
        if raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false.")

    def int(self, name, default, minimum=None, maximum=None):
        raw = self.env.str(name, default="")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(f"{name}={value} is out of range ({minimum}..{maximum}).")
        return value

    def float(self, name, default):
        raw = self.env.str(name, default="")
        if raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number.") from None

    def list(self, name, default):
        raw = self.env.str(name, default="")
        if raw == "" and default is None:
            raise ConfigError(f"{name} is not set: set it in the environment (see docs/operations-guide.md).")
        if raw == "":
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def networks(self, name, default):
        """A comma-separated list of IP networks in CIDR notation (host bits allowed: 10.0.10.7/24 is 10.0.10.0/24)."""
        values = []
        for item in self.list(name, default):
            try:
                values.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {item!r} is not a network in CIDR notation, e.g. 10.0.10.0/24.") from None
        return values

    def labels(self, name, default):
        """Prometheus labels as a JSON object: {"label": "value", ...} for every alert, and {"AlertName": {"label":
        "value"}} for one alert. Returns (alert name or "", label, value) triples, sorted."""
        raw = self.env.str(name, default="")
        if raw.strip() == "":
            return tuple(default)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f'{name} is not valid JSON ({exc}): use e.g. {{"team": "ops"}}.') from None
        if not isinstance(data, dict):
            raise ConfigError(f'{name} must be a JSON object of labels, e.g. {{"team": "ops"}}.')
        triples = []
        for key, value in data.items():
            pairs = value.items() if isinstance(value, dict) else [(key, value)]
            alert = key if isinstance(value, dict) else ""
            for label, text in pairs:
                if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
                    raise ConfigError(f"{name}: {label!r} is not a Prometheus label name.")
                if not isinstance(text, str):
                    raise ConfigError(f"{name}: the value of {label!r} must be a string.")
                triples.append((alert, label, text))
        return tuple(sorted(triples))

    def url(self, name, default, schemes=("http", "https")):
        value = self.str(name, default).strip()
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            wanted = " or ".join(f"{s}://" for s in schemes)
            raise ConfigError(f"{name}={value!r} is not a URL: it must start with {wanted} and name a host.")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"{name}={value!r} has an invalid port.") from None
        return value.rstrip("/")

    def database(self, name, default):
        value = self.str(name, default)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                config = self.env.db_url_config(value)
            except Exception as exc:  # django-environ raises several types for bad URLs
                raise ConfigError(f"{name} is malformed ({exc}).") from None
        if not config.get("ENGINE"):
            raise ConfigError(
                f"{name}={value!r} is not a database URL: use sqlite:////path/to/db.sqlite3 or "
                "postgres://user:password@host:5432/name."
            )
        if config["ENGINE"].endswith("sqlite3"):
            # The test database is a file beside the database, not Django's default in-memory one: the live server's
            # request threads then have a connection each (an in-memory database is one connection shared by all,
            # which concurrent requests corrupt), and a task cluster process can open it as in production.
            name = str(config.get("NAME") or "")
            if name and name != ":memory:":
                stem = name[: -len(".sqlite3")] if name.endswith(".sqlite3") else name
                config.setdefault("TEST", {}).setdefault("NAME", f"{stem}-test.sqlite3")
            # WAL lets the task cluster write while the portal reads; the timeout waits for a lock instead of failing.
            config.setdefault("OPTIONS", {}).update(
                {
                    "timeout": 20,
                    "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                }
            )
        elif not config.get("NAME"):
            raise ConfigError(f"{name}={value!r} names no database: add /dbname at the end.")
        else:
            # A new PostgreSQL connection costs more than a whole webhook request: keep connections open
            # (checked before reuse) unless the URL says otherwise with ?conn_max_age=N.
            if "conn_max_age" not in value:
                config["CONN_MAX_AGE"] = 60
            config["CONN_HEALTH_CHECKS"] = True
        return config

    @staticmethod
    def secret_file(path):
        """A generated secret kept in a file under var/, so a development portal needs no set-up."""
        path = Path(path)
        if path.is_file():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        path.write_text(value + "\n")
        path.chmod(0o600)
        return value


def fail(exc):
    """Print one line and stop: used by settings.py when the environment is wrong."""
    sys.stderr.write(f"vmautoscale: configuration error: {exc}\n")
    raise SystemExit(2)
