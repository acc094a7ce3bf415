"""Webhook endpoints: ``/webhooks/<platform>`` for whatsapp, messenger, instagram (and ``meta`` for all).

GET answers Meta's subscription handshake. POST verifies ``X-Hub-Signature-256`` over the raw body, stores
the delivery (committed) and answers 200 at once; a Celery task parses it. Async, so that the signature check
runs on the event loop and only the insert takes the ORM's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from messaging.meta import selectors as meta_selectors
from messaging.meta import services
from messaging.meta.signature import HEADER, signature_valid, token_matches

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Django's ASGI handler gives every request its own thread for thread-sensitive sync code, so a plain
# sync_to_async ORM call opens (and drops) a PostgreSQL connection per delivery: slow, and under load it runs
# the server out of connections. The webhook's ORM work runs on these few long-lived threads instead, each
# keeping its connection.
_DB_THREAD_COUNT = 4
_DB_THREADS = ThreadPoolExecutor(max_workers=_DB_THREAD_COUNT, thread_name_prefix="webhook-db")


def close_db_threads_connections() -> None:
    """Close the connections the webhook threads hold (tests: before their database is dropped)."""
    barrier = threading.Barrier(_DB_THREAD_COUNT)

    def close() -> None:
        # The barrier holds every task until all run at once: one task per thread, so every thread closes.
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [_DB_THREADS.submit(close) for _ in range(_DB_THREAD_COUNT)]:
        future.result(timeout=15)


def _in_db_thread(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (InterfaceError, OperationalError):
            # The kept connection broke (database restarted, idle timeout): reconnect once. Cheaper than a
            # health-check query before every delivery. A row committed just before the error may be stored
            # twice; processing de-duplicates messages, and Meta would have retried anyway.
            connections.close_all()
            return fn(*args, **kwargs)

    return sync_to_async(run, thread_sensitive=False, executor=_DB_THREADS)


PLATFORMS = ("whatsapp", "messenger", "instagram", "meta")


def _handshake_ok(platform: str, mode: str, token: str) -> bool:
    if mode != "subscribe" or not token:
        return False
    # Check every candidate (no early exit on a match), so the time taken says nothing about which one.
    ok = token_matches(token, settings.META_VERIFY_TOKEN)
    for expected in meta_selectors.verify_tokens(platform):
        ok = token_matches(token, expected) | ok
    return ok


@csrf_exempt
async def webhook(request: HttpRequest, platform: str) -> HttpResponse:
    if platform not in PLATFORMS:
        return HttpResponse(status=404)
    if request.method == "GET":
        # Django keeps the dots of hub.mode (PHP would turn them into underscores).
        mode = request.GET.get("hub.mode", "")
        token = request.GET.get("hub.verify_token", "")
        challenge = request.GET.get("hub.challenge", "")
        if await _in_db_thread(_handshake_ok)(platform, mode, token):
            return HttpResponse(challenge, content_type="text/plain")
        return HttpResponseForbidden("verification failed", content_type="text/plain")
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    status, text = await intake(platform, request.body, request.headers.get(HEADER))
    return HttpResponse(text, status=status, content_type="text/plain")


async def intake(platform: str, body: bytes, header: str | None) -> tuple[int, bytes]:
    """A POSTed delivery: (403, ...) with nothing stored on a bad or missing signature, else stored and
    committed, then (200, ...). ``body`` must be the exact bytes Meta signed: never re-serialised JSON.
    Shared by the Django view and the ASGI fast path (messaging/meta/asgi.py)."""
    verified: list[int] | None = []
    if not signature_valid(body, header, settings.META_APP_SECRET):
        verified = await _in_db_thread(services.webhook_signers)(body, header) if header else None
    if verified is None:
        logger.warning("webhook %s: bad or missing signature (%d bytes), rejected", platform, len(body))
        return 403, b"bad signature"
    await _in_db_thread(services.webhook_delivery_store)(
        platform=platform, body=body, signature=header or "", verified_accounts=verified
    )
    return 200, b"EVENT_RECEIVED"
