"""Webhook endpoints: ``/webhooks/<platform>`` for whatsapp, messenger, instagram (and ``meta`` for all).

GET answers Meta's subscription handshake. POST verifies ``X-Hub-Signature-256`` over the raw body, stores
the delivery (committed) and answers 200 at once; a Celery task parses it. Async, so that the signature check
runs on the event loop and only the insert takes the ORM's thread.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from common import aio, metrics
from messaging.meta import intake as meta_intake
from messaging.meta import selectors as meta_selectors
from messaging.meta.signature import HEADER, signature_valid, signature_well_formed, token_matches

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _in_db_thread(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``fn`` on the process's database threads (common.aio), each keeping its connection: Django's ASGI
    handler would give every request a thread, and a connection, of its own."""

    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (InterfaceError, OperationalError):
            # The kept connection broke (database restarted, idle timeout): reconnect once. Cheaper than a
            # health-check query before every delivery. A row committed just before the error may be stored
            # twice; processing de-duplicates messages, and Meta would have retried anyway.
            connections.close_all()
            return fn(*args, **kwargs)

    return functools.partial(aio.database, run)


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
    length = request.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_body_bytes():
        metrics.WEBHOOK_INTAKE.labels(platform, "too_large").inc()
        return HttpResponse(b"payload too large", status=413, content_type="text/plain")
    status, text = await intake(platform, request.body, request.headers.get(HEADER))
    return HttpResponse(text, status=status, content_type="text/plain")


def max_body_bytes() -> int:
    """The largest webhook body read: WEBHOOK_MAX_BODY_BYTES, within Django's own upload limit."""
    return min(settings.WEBHOOK_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


async def intake(platform: str, body: bytes, header: str | None) -> tuple[int, bytes]:
    """A POSTed delivery: (403, ...) with nothing stored on a bad or missing signature, else stored and
    committed, then (200, ...); a replay of a stored delivery is answered 200 and not stored again.
    ``body`` must be the exact bytes Meta signed: never re-serialised JSON. Shared by the Django view and the
    ASGI fast path (messaging/meta/asgi.py).

    Cheap refusals first (docs/security.md, "Webhook intake"): the size, then the signature over the raw
    bytes with the deployment's secret, then with tenants' own secrets from process memory. Nothing is
    parsed and the database is not touched before a secret has verified the bytes (except reloading the
    tenants' secrets, at most once per WEBHOOK_SECRET_CACHE_SECONDS)."""
    if len(body) > max_body_bytes():
        metrics.WEBHOOK_INTAKE.labels(platform, "too_large").inc()
        return 413, b"payload too large"
    verified: list[int] | None = []
    if not signature_valid(body, header, settings.META_APP_SECRET):
        verified = None
        if header and signature_well_formed(header):
            keys = meta_selectors.signing_keys_fresh()
            if keys is None:
                keys = await _in_db_thread(meta_selectors.signing_keys_load)()
            verified = meta_intake.webhook_signers(body, header, keys) if keys else None
    if verified is None:
        logger.warning("webhook %s: bad or missing signature (%d bytes), rejected", platform, len(body))
        metrics.WEBHOOK_INTAKE.labels(platform, "bad_signature").inc()
        return 403, b"bad signature"
    stored = await _in_db_thread(meta_intake.webhook_delivery_store)(
        platform=platform, body=body, signature=header or "", verified_accounts=verified
    )
    metrics.WEBHOOK_INTAKE.labels(platform, "accepted" if stored is not None else "duplicate").inc()
    if stored is None:
        logger.info(
            "webhook %s: a delivery stored before (%d bytes), acknowledged again", platform, len(body)
        )
    return 200, b"EVENT_RECEIVED"
