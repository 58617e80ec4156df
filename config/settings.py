"""Tollgate settings, read from the environment.

Defaults are for development and need nothing installed: SQLite in `var/`, an in-process
cache, tasks run in-process, email to the console. `DATABASE_URL` and `REDIS_URL` switch to
PostgreSQL and Redis (with real Celery workers). Nothing exists only in production.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url

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
# Upstream API keys stored in the database are encrypted with a key derived from this.
FIELD_ENCRYPTION_KEY = env_secret("FIELD_ENCRYPTION_KEY") or SECRET_KEY

ALLOWED_HOSTS = [
    h.strip() for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "accounts",
    "billing",
    "keys",
    "proxy",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

# Celery: a real broker with REDIS_URL; without it, tasks run in-process (development only).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 120)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "expire-reservations": {
        "task": "billing.tasks.reservations_expire_task",
        "schedule": float(env_int("RESERVATION_SWEEP_SECONDS", 30)),
    },
    "purge-traces": {"task": "proxy.tasks.traces_purge_task", "schedule": 3600.0},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsTenantMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
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
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "DEFAULT_GENERATOR_CLASS": "config.openapi.SchemaGenerator",
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
DEFAULT_KEY_RPM = 60
DEFAULT_KEY_MAX_CONCURRENCY = 5

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG and bool(DATABASE_URL))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
