"""Settings of the VM Autoscale portal, all read from the environment.

docs/operations-guide.md lists every variable. Defaults point at the local lab (`python -m lab up` writes
var/lab/lab.env with the lab's addresses), so `make run` needs no configuration.
"""

from pathlib import Path

from django.utils.translation import gettext_lazy as _

from vmautoscale.config import ConfigError, Settings, fail

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

try:
    import os

    # The local lab's run directory (`make run` and `python -m lab` use LAB_RUN_DIR too); its lab.env is read.
    _lab_dir = os.environ.get("LAB_RUN_DIR") or str(VAR_DIR / "lab")
    _lab_env = os.environ.get("LAB_ENV_FILE", str(Path(_lab_dir) / "lab.env"))
    env = Settings(env_file=_lab_env or None)

    # A real host (the deployment's env template sets it): every address and credential must then come from the
    # environment, and the lab's values below are never used; HTTPS settings are on.
    PRODUCTION = env.bool("PRODUCTION", False)

    def lab(value):
        """A default for the local lab only: None (the variable is required) in production."""
        return None if PRODUCTION else value

    DEBUG = env.bool("DEBUG", False)
    # The demo (demo/: seed_demo, simulate_load) drives the local lab: on with the lab only, never on a real host.
    DEMO_ENABLED = env.bool("DEMO_ENABLED", False)
    SECRET_KEY = env.str("SECRET_KEY", lab("")) or Settings.secret_file(VAR_DIR / "secret_key")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", lab(["127.0.0.1", "localhost", "[::1]"]))
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])
    DATABASES = {"default": env.database("DATABASE_URL", lab(f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}

    # HTTPS (docs/operations-guide.md, "HTTPS and the proxy"): on in production, where nginx terminates TLS.
    HTTPS = env.bool("HTTPS", PRODUCTION)
    SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", True)
    # Local health checks and Prometheus may use plain HTTP to 127.0.0.1:8000.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    # Only behind a TLS-terminating proxy that sets X-Forwarded-Proto and drops the clients' own (nginx behind
    # gunicorn's --forwarded-allow-ips needs none of this).
    if env.bool("TRUST_X_FORWARDED_PROTO", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The API schema and Swagger UI need a log-in unless this is true.
    API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", False)
    # Failed log-ins (admin form and the API's basic auth): this many for one user name from one address locks
    # them out for LOGIN_LOCKOUT_MINUTES.
    LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", 5, 1)
    LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", 15, 1)

    # The portal's own address, as Alertmanager and the Jenkins pipeline reach it (webhook and callbacks).
    PORTAL_URL = env.url("PORTAL_URL", lab("http://127.0.0.1:8000"))
    # Credential Alertmanager presents on the webhook (bearer token); generated for development.
    WEBHOOK_TOKEN = env.str("WEBHOOK_TOKEN", lab("")) or Settings.secret_file(VAR_DIR / "webhook_token")
    # Bearer token Prometheus must present to scrape /metrics; empty leaves /metrics open.
    METRICS_TOKEN = env.str("METRICS_TOKEN", "")
    # Optional basic-auth credential for the webhook (both empty: basic auth is refused, only the bearer token works).
    WEBHOOK_BASIC_USER = env.str("WEBHOOK_BASIC_USER", "")
    WEBHOOK_BASIC_PASSWORD = env.str("WEBHOOK_BASIC_PASSWORD", "")

    # vCenter
    VCENTER_URL = env.url("VCENTER_URL", lab("https://127.0.0.1:8989/sdk"))
    VCENTER_USER = env.str("VCENTER_USER", lab("administrator@vsphere.local"))
    VCENTER_PASSWORD = env.str("VCENTER_PASSWORD", lab("lab-password"))
    VCENTER_VERIFY_TLS = env.bool("VCENTER_VERIFY_TLS", True)
    VCENTER_TIMEOUT = env.float("VCENTER_TIMEOUT", 30.0)

    # The monitoring host (Prometheus and Alertmanager), reached over SSH.
    MONITORING_SSH_HOST = env.str("MONITORING_SSH_HOST", lab("127.0.0.1"))
    MONITORING_SSH_PORT = env.int("MONITORING_SSH_PORT", 22, 1, 65535)
    MONITORING_SSH_USER = env.str("MONITORING_SSH_USER", lab("root"))
    MONITORING_SSH_KEY_FILE = env.str("MONITORING_SSH_KEY_FILE", lab(str(VAR_DIR / "lab" / "ssh" / "client_key")))
    MONITORING_SSH_KNOWN_HOSTS = env.str(
        "MONITORING_SSH_KNOWN_HOSTS", lab(str(VAR_DIR / "lab" / "ssh" / "known_hosts"))
    )
    MONITORING_SSH_TIMEOUT = env.float("MONITORING_SSH_TIMEOUT", 10.0)
    PROMETHEUS_URL = env.url("PROMETHEUS_URL", lab("http://127.0.0.1:9090"))
    ALERTMANAGER_URL = env.url("ALERTMANAGER_URL", lab("http://127.0.0.1:9093"))
    PROMETHEUS_CONFIG_FILE = env.str("PROMETHEUS_CONFIG_FILE", "/etc/prometheus/prometheus.yml")
    PROMETHEUS_RULES_FILE = env.str("PROMETHEUS_RULES_FILE", "/etc/prometheus/rules/vmautoscale.rules.yml")
    PROMETHEUS_TARGETS_DIR = env.str("PROMETHEUS_TARGETS_DIR", "/etc/prometheus/targets/vmautoscale")
    # Monitored instances (the scrape targets an operator lists on a config) must be IP addresses inside these
    # networks, or host names under these domains: nobody can make Prometheus scrape an address the portal does not
    # know to be a service VM. The lab and the tests use loopback; list the services' VM networks in production.
    MONITORED_NETWORKS = env.networks("MONITORED_NETWORKS", ["127.0.0.0/8"])
    MONITORED_DOMAINS = env.list("MONITORED_DOMAINS", [])
    # Window of rate() in the default CPU rule: about 4 scrape intervals (the lab scrapes every 1 s and uses 5s).
    AUTOSCALE_RATE_WINDOW = env.str("AUTOSCALE_RATE_WINDOW", "1m")
    ALERTMANAGER_CONFIG_FILE = env.str("ALERTMANAGER_CONFIG_FILE", "/etc/prometheus/alertmanager.yml")
    # The portal watching itself (autoscaling/rendering.py, "The portal's own alert rules"): its rule file (empty:
    # vmautoscale-portal.rules.yml beside PROMETHEUS_RULES_FILE), whether to push its rules and a scrape job for
    # its /metrics (at PORTAL_METRICS_URL, empty: PORTAL_URL/metrics), and the labels its alerts carry for routing.
    PORTAL_RULES_FILE = env.str("PORTAL_RULES_FILE", "")
    PORTAL_ALERT_RULES = env.bool("PORTAL_ALERT_RULES", True)
    PORTAL_SCRAPE_JOB = env.bool("PORTAL_SCRAPE_JOB", True)
    PORTAL_METRICS_URL = env.str("PORTAL_METRICS_URL", "")
    # The scrape job's scrape_interval (a Prometheus duration; empty: Prometheus' global one, or what the job says).
    PORTAL_SCRAPE_INTERVAL = env.str("PORTAL_SCRAPE_INTERVAL", "")
    PORTAL_ALERT_LABELS = env.labels("PORTAL_ALERT_LABELS", ())
    PROMTOOL_PATH = env.str("PROMTOOL_PATH", "promtool")
    AMTOOL_PATH = env.str("AMTOOL_PATH", "amtool")
    # Empty: reload through the lifecycle API. Otherwise a command run on the host (e.g. a container restart).
    PROMETHEUS_RELOAD_COMMAND = env.str("PROMETHEUS_RELOAD_COMMAND", "")
    ALERTMANAGER_RELOAD_COMMAND = env.str("ALERTMANAGER_RELOAD_COMMAND", "")

    # Jenkins
    JENKINS_URL = env.url("JENKINS_URL", lab("http://127.0.0.1:8080"))
    JENKINS_USER = env.str("JENKINS_USER", lab("autoscale"))
    JENKINS_TOKEN = env.str("JENKINS_TOKEN", lab("lab-token"))
    JENKINS_TIMEOUT = env.float("JENKINS_TIMEOUT", 10.0)
    # Starting a scale-out's build: attempts and first back-off (doubling), how long to follow the queue item to a
    # build number, when the sweep re-queues an event left pending, and how long a trigger claim is held.
    EVENT_TRIGGER_ATTEMPTS = env.int("EVENT_TRIGGER_ATTEMPTS", 4, 1, 20)
    EVENT_TRIGGER_BACKOFF = env.float("EVENT_TRIGGER_BACKOFF", 0.5)
    EVENT_QUEUE_WAIT = env.float("EVENT_QUEUE_WAIT", 5.0)
    EVENT_PENDING_SWEEP_AFTER = env.int("EVENT_PENDING_SWEEP_AFTER", 30, 1)
    EVENT_TRIGGER_LEASE = env.int("EVENT_TRIGGER_LEASE", 120, 10)
    # The evaluator re-decides every enabled service every this many seconds (0: off; webhooks only).
    EVALUATOR_INTERVAL = env.int("EVALUATOR_INTERVAL", 15, 0, 60)
    # The decider (the webhook's notifications, decided behind its answers) runs at this CPU niceness on Linux, so
    # a burst is answered first (0: the worker's own priority).
    DECIDER_NICE = env.int("DECIDER_NICE", 10, 0, 19)
    # The circuit breaker: a service's scale-outs are held after this many consecutive failures (0: never).
    SCALE_OUT_BREAKER_FAILURES = env.int("SCALE_OUT_BREAKER_FAILURES", 3, 0, 100)
    # Stored build logs keep at most this many bytes (the tail).
    EVENT_BUILD_LOG_MAX_BYTES = env.int("EVENT_BUILD_LOG_MAX_BYTES", 1_000_000, 1000)

    # IP pools: an address that answered the pipeline's ping is not handed out again for this long.
    IPAM_SKIPPED_RETRY_SECONDS = env.int("IPAM_SKIPPED_RETRY_SECONDS", 3600, 0)

    # F5 BIG-IP (iControl REST)
    F5_URL = env.url("F5_URL", lab("https://127.0.0.1:8443"))
    F5_USER = env.str("F5_USER", lab("admin"))
    F5_PASSWORD = env.str("F5_PASSWORD", lab("lab-password"))
    F5_VERIFY_TLS = env.bool("F5_VERIFY_TLS", True)
    F5_TIMEOUT = env.float("F5_TIMEOUT", 10.0)

    # The fleet's reconcile (every minute): a VM powered off, with a red heartbeat or its F5 member down is
    # unhealthy once that lasts this many seconds; a pending, provisioning or removing instance whose VM is not in
    # vCenter is lost only this long after its last state change (a clone or a removal in progress).
    FLEET_UNHEALTHY_GRACE = env.int("FLEET_UNHEALTHY_GRACE", 120, 0)
    FLEET_LOST_GRACE = env.int("FLEET_LOST_GRACE", 900, 0)
    # The orphan sweep (every ORPHAN_SWEEP_MINUTES; 0: only `manage.py sweep_orphans`): an orphan is removed (by
    # `--fix` or the admin's action) once it has been one for FLEET_ORPHAN_GRACE seconds; a VM is powered off
    # first and destroyed FLEET_ORPHAN_DESTROY_GRACE seconds later. ORPHAN_SWEEP_FIX makes the schedule fix too.
    FLEET_ORPHAN_GRACE = env.int("FLEET_ORPHAN_GRACE", 1800, 0)
    FLEET_ORPHAN_DESTROY_GRACE = env.int("FLEET_ORPHAN_DESTROY_GRACE", 3600, 0)
    ORPHAN_SWEEP_FIX = env.bool("ORPHAN_SWEEP_FIX", False)

    # Retention (events/history.py; daily, and `manage.py prune_history`): notifications, decisions and the steps
    # of finished events after HISTORY_RETENTION_DAYS; finished events after EVENT_RETENTION_DAYS (0: keep).
    HISTORY_RETENTION_DAYS = env.int("HISTORY_RETENTION_DAYS", 90, 0)
    EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", 730, 0)

    Q_BROKER = env.str("Q_BROKER", "orm")
    Q_WORKERS = env.int("Q_WORKERS", 4, 1, 64)
    LANGUAGE_CODE = env.str("LANGUAGE_CODE", "en")
    TIME_ZONE = env.str("TIME_ZONE", "UTC")
    LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()

    # Roles and the audit trail (access/): audit entries older than this many days are pruned daily (0: kept).
    AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", 365, 0)
except ConfigError as exc:
    fail(exc)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # API tokens kept as hashes (knox); failed log-ins throttled (axes).
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "auditlog",
    "vmautoscale",
    "templates_app",
    "autoscaling",
    "fleet",
    "events",
    "dashboard",
    # Last of the apps with models: its post_migrate gives the role groups every app's permissions.
    "access",
]
if DEMO_ENABLED:
    INSTALLED_APPS.append("demo")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "access.middleware.AuditDoorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a lock-out into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "vmautoscale.urls"
WSGI_APPLICATION = "vmautoscale.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "vmautoscale" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# axes first: it refuses a locked-out user before any password is checked (the admin form and basic auth alike).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = LOGIN_LOCKOUT_MINUTES / 60
# One user name from one address: behind nginx every client is 127.0.0.1, so in effect one user name.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# Tokens do not expire by themselves (scripts use them); an administrator deletes them in the admin.
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGES = [("en", _("English")), ("ko", _("Korean"))]
# locale/thirdparty: Korean for the libraries the portal shows (DRF ships only ko_KR, which "ko" never loads).
LOCALE_PATHS = [BASE_DIR / "locale", BASE_DIR / "locale" / "thirdparty"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    # Staff users whose role holds the view's permissions (access/permissions.py, access/roles.py).
    "DEFAULT_PERMISSION_CLASSES": ["access.permissions.PortalPermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error of the API in one JSON shape: {"detail", "code", "errors"} (common/errors.py).
    "EXCEPTION_HANDLER": "common.errors.exception_handler",
    # JSON that no field can hold (1e400, NaN, NUL characters, 100,000-deep nesting) is a 400 (common/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # The browsable API's page names in the reader's language, not the view classes' English names.
    "VIEW_NAME_FUNCTION": "common.api_names.view_name",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "VM Autoscale portal API",
    "DESCRIPTION": "Templates, autoscaling configs, IP pools, alert intake, scale-out events and pipeline callbacks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema, Swagger UI and ReDoc need a log-in unless API_DOCS_PUBLIC.
    "SERVE_PERMISSIONS": [
        "rest_framework.permissions.AllowAny" if API_DOCS_PUBLIC else "rest_framework.permissions.IsAuthenticated"
    ],
    # Served from the drf-spectacular-sidecar package: the docs work with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models call their choices "status": give each set its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "ScaleOutEventStatusEnum": "events.models.ScaleOutEvent.Status",
        "EventStepStatusEnum": "events.models.EventAction.Status",
        "AlertStatusEnum": "events.api.serializers.ALERT_STATUS_CHOICES",
        "InstanceStateEnum": "fleet.models.ManagedInstance.State",
        "PipelineInstanceStateEnum": "events.api.pipeline.PIPELINE_INSTANCE_STATES",
        "ScalingProcessEnum": "autoscaling.models.ProcessSuspension.Process",
    },
}

# The audit trail: django-auditlog writes its entries into the access app's model (with the door of each change).
AUDITLOG_LOGENTRY_MODEL = "access.AuditEntry"

# django-q2: `retry` must exceed `timeout` (and the longest task) or a running task is handed out twice.
Q_CLUSTER = {
    "name": "vmautoscale",
    "workers": Q_WORKERS,
    "timeout": 300,
    "retry": 360,
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": _("Task cluster"),
    "poll": 0.2,
    # A cluster started with Q_CLUSTER_NAME=<queue> serves that queue only (django-q2 needs this key for it).
    "ALT_CLUSTERS": {},
}
if Q_BROKER.startswith("redis://") or Q_BROKER.startswith("rediss://"):
    Q_CLUSTER["redis"] = Q_BROKER
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django": {"level": "INFO"}, "paramiko": {"level": "WARNING"}},
}

# A shared cache: django-q2 keeps its cluster heartbeats there, and /healthz reads them from any process.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": Q_BROKER}
        if "redis" in Q_CLUSTER
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "vmautoscale_cache"}
    )
}
