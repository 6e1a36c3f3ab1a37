"""prefloop settings: everything an operator changes comes from the environment.

DATABASE_URL   default sqlite:///var/prefloop.sqlite3 (WAL); postgres://user@host:5432/db scales out
DEBUG          "1"/"true": the relaxed local mode (`make demo`). Default off: the production mode.
SECRET_KEY     required when DEBUG is off (start-up stops without it); a fixed key in DEBUG mode
ALLOWED_HOSTS  comma-separated (default: localhost names)
HTTPS          with DEBUG off, each defaults on; "0" turns one off (e.g. to try `make serve` on plain
               http): SECURE_SSL_REDIRECT, SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE,
               SECURE_PROXY_SSL_HEADER (trust X-Forwarded-Proto from the proxy in front),
               SECURE_HSTS_SECONDS (31536000), SECURE_HSTS_INCLUDE_SUBDOMAINS, SECURE_HSTS_PRELOAD
PREFLOOP_PROXY_COUNT  reverse proxies in front that append to X-Forwarded-For (default 1 where
               SECURE_PROXY_SSL_HEADER is on, the production default; else 0): the login
               throttle counts failures by the address they saw
The full list, with what each guards against: docs/security.md.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PREFLOOP_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = _env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. In production set it to a long random string, e.g. "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))'); "
            "for local use set DEBUG=1 instead (make demo does)."
        )
    SECRET_KEY = "django-insecure-prefloop-development-key-set-SECRET_KEY"
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS: on by default in production (DEBUG off), each settable from the environment.
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Production's one story: a reverse proxy in front terminates TLS. Its X-Forwarded-Proto is trusted
# and its entry of X-Forwarded-For counted (PREFLOOP_PROXY_COUNT, 1 by default then, 0 without one).
_BEHIND_PROXY = _env_bool("SECURE_PROXY_SSL_HEADER", not DEBUG)
if _BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Size caps, enforced once: a request body (uploads included) by config.security's middleware, texts
# where every prompt, response and rationale is validated (config/limits.py). 400 with the limit named.
PREFLOOP_MAX_UPLOAD_BYTES = int(os.environ.get("PREFLOOP_MAX_UPLOAD_BYTES", str(50 * 1024 * 1024)))  # imports
PREFLOOP_TOKEN_DAYS = int(os.environ.get("PREFLOOP_TOKEN_DAYS", "30"))  # an API token's life
PREFLOOP_MAX_BODY_BYTES = int(os.environ.get("PREFLOOP_MAX_BODY_BYTES", str(2 * 1024 * 1024)))  # all else
DATA_UPLOAD_MAX_MEMORY_SIZE = PREFLOOP_MAX_UPLOAD_BYTES
PREFLOOP_MAX_PROMPT_CHARS = int(os.environ.get("PREFLOOP_MAX_PROMPT_CHARS", "100000"))
PREFLOOP_MAX_RESPONSE_CHARS = int(os.environ.get("PREFLOOP_MAX_RESPONSE_CHARS", "100000"))
PREFLOOP_MAX_RATIONALE_CHARS = int(os.environ.get("PREFLOOP_MAX_RATIONALE_CHARS", "5000"))
# messages in one prompt conversation (each is a block on the judging page)
PREFLOOP_MAX_TURNS = int(os.environ.get("PREFLOOP_MAX_TURNS", "100"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "csp",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "generation",
    "annotate",
    "training",
    "config",  # the project's deploy checks (config/apps.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.security.RequestSizeLimitMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.http_errors.DomainErrorMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 response.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy: scripts and styles from our own origin only (no inline script, no eval,
# no CDN); model output rendered as Markdown cannot load or run anything.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Login throttling (django-axes) on /login/, /admin/login/ and the API token endpoint: after
# PREFLOOP_LOGIN_FAILURES failed attempts for one username from one address, that pair is refused
# (429) for PREFLOOP_LOGIN_COOLOFF_MINUTES; a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("PREFLOOP_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("PREFLOOP_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
AXES_LOCKOUT_CALLABLE = "config.views.login_locked_out"  # the site's own page: for how long, what to do
PREFLOOP_PROXY_COUNT = int(os.environ.get("PREFLOOP_PROXY_COUNT", "1" if _BEHIND_PROXY else "0"))

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "annotate.context_processors.progress",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{VAR_DIR / 'prefloop.sqlite3'}"
    db = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db["CONN_MAX_AGE"] = 0
        db["OPTIONS"] = {
            # WAL lets the web server read while a worker writes; IMMEDIATE takes the write lock up
            # front so concurrent writers queue on the timeout instead of failing mid-transaction.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
        # Tests use a file too (not :memory:), so concurrent tests see SQLite's real locking.
        db["TEST"] = {"NAME": str(VAR_DIR / "test-prefloop.sqlite3")}
    elif db["ENGINE"] == "django.db.backends.postgresql":
        # No JIT compilation: PostgreSQL compiles any statement estimated above its threshold on every
        # run, prepared or not. A form of the queue's candidate query that the planner estimated
        # expensive spent 40-80 ms per serve compiling, for a statement that read a few hundred
        # buffers (docs/benchmarks.md, 2026-12-07); nothing this application asks runs long enough
        # to repay compiling it, and an estimate is all it takes to cross the threshold.
        db["OPTIONS"] = {"options": "-c jit=off"}
        if os.environ.get("PREFLOOP_DB_PREPARED", "1") == "1":
            # Server-side parameters, and statements a connection runs twice prepared: the judging
            # loop's queries are planned once per connection instead of on every request (a third of
            # a judgment's time went to PostgreSQL planning them; docs/benchmarks.md).
            # PREFLOOP_DB_PREPARED=0 behind a pooler that cannot keep prepared statements (PgBouncer
            # in transaction mode before 1.21).
            db["OPTIONS"].update(server_side_binding=True, prepare_threshold=2)
        if os.environ.get("PREFLOOP_DB_POOL") == "1":
            # A pool of connections shared by the process's threads (psycopg's, through Django). Under
            # ASGI (PREFLOOP_WEB_WORKER=asgi sets this) every request runs in a thread of its own, and
            # a persistent connection per thread piles up until PostgreSQL refuses ("too many
            # clients" at 50 arena users beside 8 annotators: docs/benchmarks.md).
            db["CONN_MAX_AGE"] = 0
            size = int(os.environ.get("PREFLOOP_DB_POOL_SIZE", "8"))
            db["OPTIONS"]["pool"] = {"min_size": 1, "max_size": size, "timeout": 30}
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "landing"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
# Static files are served by WhiteNoise from the web process; in production (after `collectstatic`)
# compressed and with hashed names cached forever. PREFLOOP_STATIC_MANIFEST=0 serves them as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _env_bool("PREFLOOP_STATIC_MANIFEST", not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes "not logged in" a 401 (not_authenticated), not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's own parsers but JSON: ours refuses JSON nested too deeply with a 400 (config/parsers.py)
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The token endpoint (a password check) is throttled per client address beside django-axes.
    "DEFAULT_THROTTLE_RATES": {"token": os.environ.get("PREFLOOP_TOKEN_RATE", "20/min")},
    "EXCEPTION_HANDLER": "config.http_errors.api_exception_handler",
    # ?format= names the export's row format, not DRF's renderer.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "prefloop API",
    "DESCRIPTION": "Prompts, policies, comparisons, judgments and preference export.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs describe every staff endpoint: staff only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JudgmentChoiceEnum": "annotate.models.Choice",
        "ScreenSideEnum": "annotate.models.Side",
        "VerdictEnum": "annotate.models.Verdict",
        "CampaignStatusEnum": "annotate.models.CampaignStatus",
        "RoundStatusEnum": "training.models.RoundStatus",
    },
}

# Annotation: how long a served comparison stays reserved for the annotator it was served to.
PREFLOOP_LEASE_SECONDS = int(os.environ.get("PREFLOOP_LEASE_SECONDS", "900"))
# Share of served comparisons drawn from gold ones (known answer) while any are left for the annotator.
PREFLOOP_GOLD_RATE = float(os.environ.get("PREFLOOP_GOLD_RATE", "0.1"))

# Training rounds: fewest preference pairs a round trains on; where rounds write their data and
# checkpoints; how long a running round may stay silent before cancelling it stops waiting for it.
PREFLOOP_MIN_PAIRS = int(os.environ.get("PREFLOOP_MIN_PAIRS", "8"))
PREFLOOP_ROUNDS_DIR = Path(os.environ.get("PREFLOOP_ROUNDS_DIR", VAR_DIR / "rounds"))
PREFLOOP_ROUND_STALE_SECONDS = int(os.environ.get("PREFLOOP_ROUND_STALE_SECONDS", "600"))

# The arena: live answers stream from the generation process (`manage.py generation_server`, which
# starts and stops engines for every registered policy within PREFLOOP_ENGINE_MEMORY_GB, default half
# the machine's memory) at PREFLOOP_ARENA_URL, or from a vLLM deployment at PREFLOOP_VLLM_URL (one or
# several URLs) that serves the policy. Limits per annotator: turns in one conversation, turns started per minute; one
# answer pair generates at a time per annotator; an answer stops at PREFLOOP_ARENA_MAX_NEW_TOKENS.
PREFLOOP_ARENA_URL = os.environ.get("PREFLOOP_ARENA_URL", "http://127.0.0.1:8011").rstrip("/")
PREFLOOP_ENGINE_MEMORY_GB = float(os.environ.get("PREFLOOP_ENGINE_MEMORY_GB", "0"))
PREFLOOP_ARENA_MAX_TURNS = int(os.environ.get("PREFLOOP_ARENA_MAX_TURNS", "8"))
PREFLOOP_ARENA_TURNS_PER_MINUTE = int(os.environ.get("PREFLOOP_ARENA_TURNS_PER_MINUTE", "6"))
PREFLOOP_ARENA_MAX_NEW_TOKENS = int(os.environ.get("PREFLOOP_ARENA_MAX_NEW_TOKENS", "256"))
PREFLOOP_ARENA_TIMEOUT = float(os.environ.get("PREFLOOP_ARENA_TIMEOUT", "60"))  # seconds of silence
# The most tokens of conversation one turn sends (less where a policy's context window is smaller):
# a long prompt is refused before anything is generated, so it cannot hold the engine for everyone.
PREFLOOP_ARENA_MAX_PROMPT_TOKENS = int(os.environ.get("PREFLOOP_ARENA_MAX_PROMPT_TOKENS", "4096"))

# Long work (training rounds) runs in `manage.py db_worker` processes: the task queue is a table in
# the same database (no broker on one machine; several workers share PostgreSQL beyond one).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "prefloop": {"level": os.environ.get("PREFLOOP_LOG_LEVEL", "INFO")},
        # Django's own console handler (DEBUG only) beside the root's printed each of its lines twice.
        # (naming it resets its children: the development server's request lines keep their own)
        "django": {"handlers": [], "level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
