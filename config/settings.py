"""Tollgate settings, read from the environment.

Defaults are for development and need nothing installed: SQLite in `var/`, an in-process
cache, tasks run in-process, email to the console. `DATABASE_URL` and `REDIS_URL` switch to
PostgreSQL and Redis (with real Celery workers). Nothing exists only in production.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TOLLGATE_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return int(value)


def env_secret(name: str, default: str = "") -> str:
    """A secret from `NAME`, or from the file named by `NAME_FILE` (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def _development_secret_key() -> str:
    """A random key kept in `var/secret_key`, so every worker and restart shares it.

    Created with O_EXCL: when several workers start at once, one writes and the rest read.
    """
    path = VAR_DIR / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                return value
            import time

            time.sleep(0.01)
        raise
    value = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY") or _development_secret_key()
# Client keys and reseller tokens are stored as HMAC-SHA256(TOKEN_HASH_KEY, secret).
TOKEN_HASH_KEY = env_secret("TOKEN_HASH_KEY") or SECRET_KEY
# Secrets stored in the database (upstream API keys, alert webhook secrets, authenticator
# keys) are encrypted with keys derived from this (accounts.crypto).
FIELD_ENCRYPTION_KEY = env_secret("FIELD_ENCRYPTION_KEY") or SECRET_KEY
# Former FIELD_ENCRYPTION_KEYs, comma-separated (or one a line in the _FILE): what they
# encrypted still decrypts until `manage.py reencrypt_secrets` has moved it to the current key.
FIELD_ENCRYPTION_KEY_FALLBACKS = [
    key.strip()
    for key in env_secret("FIELD_ENCRYPTION_KEY_FALLBACKS").replace("\n", ",").split(",")
    if key.strip()
]

ALLOWED_HOSTS = [
    h.strip() for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    # django.contrib.admin with a second factor for operators (config/admin_site.py).
    "config.apps.OperatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's own files, served from here for /api/v1/docs/ (no CDN).
    "drf_spectacular_sidecar",
    "axes",
    "django_htmx",
    "template_partials",
    # Optional two-factor sign-in on the dashboard: TOTP apps and single-use backup codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "accounts",
    "billing",
    "keys",
    "usage",
    "proxy",
    "pages",
    "alerts",
    "portal",
    "dashboard",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # A view that found the database pool empty answers 503 + Retry-After (config/capacity.py).
    "config.capacity.PoolExhaustedMiddleware",
    # Content-Security-Policy on every Django response (see "Browser security headers").
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the two-factor step.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # request.htmx: a page answers an htmx request with just the fragment it swaps.
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes requires: answers a locked-out sign-in (see "Sign-in throttling").
    "axes.middleware.AxesMiddleware",
]

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
                "portal.context.portal_client",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASE_URL = env_str("DATABASE_URL")
SQLITE_OPTIONS = {
    # Write transactions take the lock up front, so two concurrent money flows queue
    # instead of failing with "database is locked" mid-way.
    "transaction_mode": "IMMEDIATE",
    # How long a write waits for another writer before "database is locked".
    "timeout": env_int("SQLITE_BUSY_TIMEOUT_SECONDS", 20),
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
# Not dj_database_url's TypedDict: the SQLite default names a Path and gains OPTIONS below.
DATABASES: dict[str, Any]
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 0))
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The same options whether SQLite is the default or named by DATABASE_URL.
    DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")

# ---- Django's database connections (REST API, sub-account API, admin, dashboard) ----
# Why a pool and a gate: config/capacity.py (ASGI Django holds a connection per request in
# flight). Per server worker: at most DB_POOL_MAX connections for Django, beside the
# proxy's PROXY_DB_POOL_MAX; so workers × (DB_POOL_MAX + PROXY_DB_POOL_MAX), plus Celery's,
# must stay below PostgreSQL's max_connections. DB_POOL_MAX=0: no pool (a connection per
# request, Django's default; then only DJANGO_CONCURRENCY bounds them).
DB_POOL_MIN = env_int("DB_POOL_MIN", 1)
DB_POOL_MAX = env_int("DB_POOL_MAX", 4)
# How long a request waits for its turn (the gate) or for a pooled connection: then 503.
DB_POOL_TIMEOUT = env_int("DB_POOL_TIMEOUT", 10)
if IS_POSTGRES and DB_POOL_MAX > 0:
    if DATABASES["default"]["CONN_MAX_AGE"]:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "CONN_MAX_AGE needs DB_POOL_MAX=0: pooled connections are reused."
        )
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(DB_POOL_MIN, DB_POOL_MAX),
        "max_size": DB_POOL_MAX,
        "timeout": DB_POOL_TIMEOUT,
        "name": "tollgate-django",
    }
    # A pooled connection can outlive its server (a PostgreSQL restart): check it before
    # lending it (an empty query), so a request never gets a dead one.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Requests in Django at once per server worker (config.capacity.DjangoGate); 0: no limit.
# On SQLite (development) nothing is pooled and nothing is limited unless asked.
DJANGO_CONCURRENCY = env_int("DJANGO_CONCURRENCY", DB_POOL_MAX if IS_POSTGRES else 0)

if not IS_POSTGRES:
    # Tests that run the server in a subprocess need the test database in a file; one per
    # test process, so two runs in one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "emails"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Tollgate <noreply@localhost>")
# The mail server of EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend (Django's
# settings, read from the environment): sign-in codes, alerts and account emails go there.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# Seconds before a mail server that does not answer counts as failed (a request sending a
# sign-in code waits at most this long).
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)

# Celery: a real broker with REDIS_URL; without it, tasks run in-process (development only).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 120)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The queue tasks (the beat's included) are sent to: one per deployment sharing a broker.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_BEAT_SCHEDULE = {
    "expire-reservations": {
        "task": "keys.tasks.reservations_expire_task",
        "schedule": float(env_int("RESERVATION_SWEEP_SECONDS", 30)),
    },
    "purge-traces": {"task": "usage.tasks.traces_purge_task", "schedule": 3600.0},
    # Handled Stripe webhook events past STRIPE_EVENT_RETENTION_DAYS (failed ones stay).
    "purge-stripe-events": {"task": "billing.tasks.stripe_events_purge_task", "schedule": 3600.0},
    "roll-up-usage": {
        "task": "usage.tasks.usage_rollup_task",
        "schedule": float(env_int("USAGE_ROLLUP_SECONDS", 60)),
    },
    # The portal's client alerts: keys that crossed a client's alert, or are back below it.
    "client-alerts": {
        "task": "portal.tasks.client_alerts_task",
        "schedule": float(env_int("CLIENT_ALERTS_SECONDS", 60)),
    },
    # The resellers' alerts: keys past a share of their budget or cap, wallets running low;
    # deliveries whose task was lost are sent again.
    "alerts": {
        "task": "alerts.tasks.alerts_check_task",
        "schedule": float(env_int("ALERTS_CHECK_SECONDS", 60)),
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsTenantMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JsonParser"],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    # A courtesy limit on the REST API only; hard caps live in the proxy's rate limiter.
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_THROTTLE_RATE", "600/min")},
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tollgate reseller API",
    "DESCRIPTION": (
        "Your wallet, client keys, usage, earnings and statements. Authenticate with a "
        "reseller API token (`tgr-…`: `make run` prints one; the dashboard makes more): "
        "`Authorization: Bearer <token>` (**Authorize** here). Amounts are USD as decimal "
        "strings.\n\n"
        "The model traffic itself is OpenAI- and Anthropic-compatible and takes a client key "
        "(`tg-…`): `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings` and "
        "`/v1/messages`, `GET /v1/models` and `/v1/key`. Point an official SDK at it: "
        "OpenAI's with the base URL `<this server>/v1`, Anthropic's with `<this server>`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "DEFAULT_GENERATOR_CLASS": "config.openapi.SchemaGenerator",
    # The API reference (/api/v1/docs/): Swagger UI from drf-spectacular-sidecar's files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {
        "deepLinking": True,
        # The token typed into "Authorize" lives only as long as the page.
        "persistAuthorization": False,
        "defaultModelsExpandDepth": 0,
        "docExpansion": "list",
        "tryItOutEnabled": False,
    },
}

# Proxy and metering.
# A hold not settled by then belongs to a crashed worker and is released by the sweep; it
# must outlast the slowest upstream call (Upstream.timeout_seconds, 600 by default).
RESERVATION_TTL_SECONDS = env_int("RESERVATION_TTL_SECONDS", 900)
PROXY_MAX_BODY_BYTES = env_int("PROXY_MAX_BODY_BYTES", 10 * 1024 * 1024)
PROXY_KEY_CACHE_SECONDS = env_int("PROXY_KEY_CACHE_SECONDS", 10)
PROXY_ROUTE_CACHE_SECONDS = env_int("PROXY_ROUTE_CACHE_SECONDS", 10)
# The owner ``GET /v1/models`` shows for every model (OpenAI's ``owned_by``): the operator's
# name for its clients, never an upstream's, which would tell them where their traffic goes.
PROXY_MODELS_OWNED_BY = env_str("PROXY_MODELS_OWNED_BY", "tollgate")
PROXY_TRACE_FLUSH_MS = env_int("PROXY_TRACE_FLUSH_MS", 50)
PROXY_DB_POOL_MIN = env_int("PROXY_DB_POOL_MIN", 2)
PROXY_DB_POOL_MAX = env_int("PROXY_DB_POOL_MAX", 16)
# Connections per worker sending reserve/settle transactions; each sends every transaction
# queued meanwhile in one message (see proxy.db.PostgresDatabase). One measured best here:
# fewer backends queueing on a hot key row's lock (c=50: 1,029 RPS against 891 with two).
PROXY_DB_SENDERS = env_int("PROXY_DB_SENDERS", 1)
# Whether the proxy's reserve/settle transactions wait for PostgreSQL's WAL flush. Off: a
# proxy worker crash still loses nothing (a charge commits before the response ends), but a
# crash of the PostgreSQL server itself may lose its last fraction of a second of commits,
# each atomically (books still balance). A WAL flush costs ~3.5 ms on a slow disk.
PROXY_SYNCHRONOUS_COMMIT = env_bool("PROXY_SYNCHRONOUS_COMMIT", False)
# The proxy prepares its billing statements once per database connection (session state).
# Turn off behind a pooler in transaction mode (PgBouncer's pool_mode=transaction).
PROXY_DB_PREPARE = env_bool("PROXY_DB_PREPARE", True)
TRACE_RETENTION_DAYS = env_int("TRACE_RETENTION_DAYS", 30)
if TRACE_RETENTION_DAYS < 1:
    # 0 would make the hourly purge delete every trace up to the minute.
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("TRACE_RETENTION_DAYS must be at least 1.")
# Usage rollups (15-minute sums of traces) outlive the traces; 0 keeps them forever. Never
# shorter than the traces': a report would lose rolled requests whose traces it still has.
USAGE_ROLLUP_RETENTION_DAYS = env_int("USAGE_ROLLUP_RETENTION_DAYS", 0)
if 0 < USAGE_ROLLUP_RETENTION_DAYS < TRACE_RETENTION_DAYS or USAGE_ROLLUP_RETENTION_DAYS < 0:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "USAGE_ROLLUP_RETENTION_DAYS must be 0 (forever) or at least TRACE_RETENTION_DAYS."
    )
DEFAULT_KEY_RPM = 60
DEFAULT_KEY_MAX_CONCURRENCY = 5

# ---- Sign-in throttling (django-axes): the admin's login, and every later form that signs
# in through django.contrib.auth.authenticate(request=...) (the dashboard) ----
# Failures are counted per account and, separately, per client address; either count
# reaching LOGIN_FAILURE_LIMIT within LOGIN_COOLOFF_SECONDS refuses that account (from any
# address, even with the right password) or that address (for any account) with 429 until
# the cool-off has passed since the last failure. Counts live in the database, so every
# server worker shares them. `manage.py axes_reset` (or axes_reset_username EMAIL,
# axes_reset_ip ADDRESS) lifts locks at once.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out attempt
    # Django's ModelBackend, finding the user by email whatever its case (see the module).
    "accounts.backends.EmailBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # two separate counts, not the pair
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900))
# Off by default: a success would also clear its address's count, so anyone holding one
# account (any reseller) could reset their address between guesses at other accounts.
AXES_RESET_ON_SUCCESS = env_bool("LOGIN_RESET_ON_SUCCESS", False)
# The client's address is REMOTE_ADDR only: uvicorn already replaced it with the
# X-Forwarded-For address when, and only when, the peer is in FORWARDED_ALLOW_IPS, so a
# forwarded header from anyone else can never pick the address that is counted.
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_address"
# The account's count is kept under the email in lower case, so "Bob@…" and "bob@…" add up.
AXES_USERNAME_CALLABLE = "accounts.lockout.client_username"
# A page on the dashboard's forms (still 429), plain text elsewhere (the admin's login).
AXES_LOCKOUT_CALLABLE = "dashboard.account_views.lockout_response"
# Its start-up banner would open every manage.py command's output; lockouts are still logged.
AXES_VERBOSE = False

# The dashboard's sign-in; signing in lands on the overview.
LOGIN_URL = "dashboard:sign-in"
LOGIN_REDIRECT_URL = "dashboard:overview"

# ---- Dashboard accounts: sign-up, email links, two-factor ----
# Whether anyone may open a reseller account at /dashboard/sign-up/ (email + password; the
# account works once its email is verified). Off: the page answers 404 and says sign-up is
# closed, and resellers are created by the operator (`manage.py create_reseller`).
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
# How long a sign-up's verification link works. Each link also stops working once used, and
# when a newer sign-up for the same address replaces the pending password.
EMAIL_VERIFICATION_SECONDS = env_int("EMAIL_VERIFICATION_SECONDS", 2 * 24 * 3600)
# How long a password-reset link works (Django's setting); one use, as the password changes.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_SECONDS", 3600)
# Account emails (verification links, password resets, "someone tried to sign up with your
# address") sent to one address per kind and hour; more requests get the same answer on the
# page and no email, so no one can flood an inbox through the forms.
ACCOUNT_EMAILS_PER_HOUR = env_int("ACCOUNT_EMAILS_PER_HOUR", 3)
# Sign-ups accepted from one client address per hour (the address axes counts).
SIGNUPS_PER_HOUR = env_int("SIGNUPS_PER_HOUR", 10)
# The name authenticator apps show beside the account (django-otp's otpauth:// issuer).
OTP_TOTP_ISSUER = env_str("TOTP_ISSUER", "Tollgate")
# Wrong codes: each TOTP or backup-code device refuses any code for 1, 2, 4, 8 … seconds
# after its successive failures (django-otp's throttle), and every wrong code also counts as
# a failed sign-in of the account (axes above), so LOGIN_FAILURE_LIMIT locks it.
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
# The admin (/admin/): an operator who has an authenticator (``manage.py otp_enrol <email>``)
# always gives a code after the password. True: every operator must, and one without an
# authenticator is refused until they enrol one. Production should set it True; off by
# default so that ``make run``'s demo operator signs in with the password alone.
ADMIN_REQUIRE_2FA = env_bool("ADMIN_REQUIRE_2FA", False)

# ---- Client portal (/portal/): email one-time codes, sessions, key binding ----
# A sign-in code: 6 digits, valid this long, single use; this many wrong codes kill it (a
# new one must be sent), and each wrong code makes the next try wait 1, 2, 4 … seconds times
# the factor (django-otp's throttle; 0 turns the wait off).
PORTAL_CODE_SECONDS = env_int("PORTAL_CODE_SECONDS", 600)
PORTAL_CODE_MAX_ATTEMPTS = env_int("PORTAL_CODE_MAX_ATTEMPTS", 5)
PORTAL_CODE_THROTTLE_FACTOR = env_int("PORTAL_CODE_THROTTLE_FACTOR", 1)
# Sending: at least this long between two codes to one address, and at most so many codes
# per address and per client IP address an hour. A refused send gets the same page as a sent
# one (no one learns whether an address is known).
PORTAL_CODE_COOLDOWN_SECONDS = env_int("PORTAL_CODE_COOLDOWN_SECONDS", 60)
PORTAL_CODES_PER_EMAIL_PER_HOUR = env_int("PORTAL_CODES_PER_EMAIL_PER_HOUR", 5)
PORTAL_CODES_PER_IP_PER_HOUR = env_int("PORTAL_CODES_PER_IP_PER_HOUR", 20)
# Binding a key by its secret: attempts per signed-in client and per IP address an hour.
PORTAL_BINDS_PER_HOUR = env_int("PORTAL_BINDS_PER_HOUR", 20)
# A portal session ends after this long without a request (and at sign-out).
PORTAL_SESSION_IDLE_SECONDS = env_int("PORTAL_SESSION_IDLE_SECONDS", 12 * 3600)
# Client alerts (emails when a bound key passes a share of its budget, or runs out) are
# checked every CLIENT_ALERTS_SECONDS by Celery beat (CELERY_BEAT_SCHEDULE above).
# ---- The resellers' alerts (alerts app), checked every ALERTS_CHECK_SECONDS (beat) ----
# A webhook URL must be https and reach only public addresses; this lifts both rules, for
# development and tests only (a receiver on 127.0.0.1).
ALERT_WEBHOOK_ALLOW_PRIVATE = env_bool("ALERT_WEBHOOK_ALLOW_PRIVATE", False)
# Seconds a webhook's receiver has to connect and answer before the try counts as failed.
ALERT_WEBHOOK_TIMEOUT_SECONDS = env_int("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5)
# A failed delivery is tried again this many times, after about 1, 2, 4 … × the backoff
# (each wait drawn between half and all of it, at most the max); then it is failed.
ALERT_DELIVERY_MAX_RETRIES = env_int("ALERT_DELIVERY_MAX_RETRIES", 5)
ALERT_DELIVERY_BACKOFF_SECONDS = env_int("ALERT_DELIVERY_BACKOFF_SECONDS", 60)
ALERT_DELIVERY_BACKOFF_MAX_SECONDS = env_int("ALERT_DELIVERY_BACKOFF_MAX_SECONDS", 3600)
# The address of this server as its users reach it (scheme, host, port; no trailing
# slash): emails sent outside a request (client and reseller alerts) link to it.
PUBLIC_URL = env_str("PUBLIC_URL", "http://localhost:8000").rstrip("/")

# ---- Card top-ups through Stripe Checkout (billing.top_ups, billing.stripe_webhooks) ----
# Without a secret key, card top-ups are off: the API answers 503 and the wallet page has no
# "Top up" button. Without a webhook secret, the webhook refuses every event (400), so no
# top-up is ever credited: both are needed.
STRIPE_SECRET_KEY = env_secret("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_secret("STRIPE_WEBHOOK_SECRET")
# Where the Stripe SDK sends its API calls (its default; a local fake of the API in tests).
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
# Where Stripe's hosted checkout pages live (a custom checkout domain, or the fake's): the
# top-up form posts and is redirected there, which its Content-Security-Policy must allow.
STRIPE_CHECKOUT_ORIGIN = env_str("STRIPE_CHECKOUT_ORIGIN", "https://checkout.stripe.com")
# Seconds a call to Stripe may take (the SDK retries a failed one twice, same idempotency key).
STRIPE_TIMEOUT_SECONDS = env_int("STRIPE_TIMEOUT_SECONDS", 30)
# Days a processed or ignored Stripe event is kept (the hourly purge deletes older ones; a
# failed one stays until it is reprocessed). Stripe retries an event for three days, and a
# redelivery of a purged event is handled again, harmlessly (the handlers are idempotent).
STRIPE_EVENT_RETENTION_DAYS = env_int("STRIPE_EVENT_RETENTION_DAYS", 90)
if STRIPE_EVENT_RETENTION_DAYS < 1:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("STRIPE_EVENT_RETENTION_DAYS must be at least 1.")
# A top-up's amount (what the wallet is credited) in USD, and the operator's optional fee on
# it, paid on top by the card: TOP_UP_FEE_PERCENT % of the amount rounded half up to the
# cent, plus TOP_UP_FEE_FIXED USD. Read by billing.top_ups.top_up_terms (a bad value is an
# ImproperlyConfigured error at the first top-up).
TOP_UP_MIN = env_str("TOP_UP_MIN", "5")
TOP_UP_MAX = env_str("TOP_UP_MAX", "10000")
TOP_UP_FEE_PERCENT = env_str("TOP_UP_FEE_PERCENT", "0")
TOP_UP_FEE_FIXED = env_str("TOP_UP_FEE_FIXED", "0")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG and bool(DATABASE_URL))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

# ---- Browser security headers (the admin, the dashboard; Django's responses only) ----
# Content-Security-Policy (django-csp 4): scripts, styles, images and fonts from this
# origin's own files only, so no inline script or style, no eval, no plugin; no <base> or
# form that leaves the origin; never framed. The Django admin works under it.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# HSTS, sent only on HTTPS requests. Behind a TLS-terminating proxy listed in
# FORWARDED_ALLOW_IPS, uvicorn takes the scheme from its X-Forwarded-Proto, so
# request.is_secure() is true there without SECURE_PROXY_SSL_HEADER (which would believe
# the header from any client). A year unless DEBUG; subdomains and preload are opt-in, as
# both bind every host under the domain for as long as browsers remember.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
