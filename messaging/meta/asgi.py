"""ASGI fast path for webhook POSTs: ``webhook_fast_path(app)`` wraps the project's ASGI application.

Django's ASGI handler runs request signals and sync middleware on a fresh thread per request, which costs
more CPU than the whole intake (verify, insert, commit). Meta sends status webhooks for every message we send
(its docs ask to size for 3x outbound plus 1x inbound), so the POST path skips the handler: it reads the
body, calls the same ``views.intake`` as the Django view, and answers. Everything else (the GET handshake,
other methods, every other URL) goes to the wrapped application unchanged.

Skipped for these POSTs, on purpose: Django middleware (sessions, CSRF, which the view exempts anyway) and
``ALLOWED_HOSTS`` (the response carries no URL built from the Host header). Body size is capped at
``WEBHOOK_MAX_BODY_BYTES`` (and ``DATA_UPLOAD_MAX_MEMORY_SIZE``): 413 above it, before reading when the
Content-Length says so; Meta's payloads are at most 3 MB.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from messaging.meta.views import PLATFORMS, intake, max_body_bytes

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
# Loose on purpose: Django's, Channels' and uvicorn's type hints for the same interface disagree.
ASGIApp = Callable[..., Awaitable[None]]

_PATH = re.compile(r"/webhooks/([a-z]+)")
_SIGNATURE = b"x-hub-signature-256"


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _webhook_post(platform: str, scope: Scope, receive: Receive, send: Send) -> None:
    limit = max_body_bytes()
    for name, value in scope.get("headers", []):
        # Refused before a byte of the body is read when the client announces it is too large.
        if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
            await _respond(send, 413, b"payload too large")
            return
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _respond(send, 413, b"payload too large")
            return
        chunks.append(chunk)
        more = message.get("more_body", False)
    header = None
    for name, value in scope.get("headers", []):
        if name.lower() == _SIGNATURE:
            header = value.decode("latin-1")
            break
    status, text = await intake(platform, b"".join(chunks), header)
    await _respond(send, status, text)


def webhook_fast_path(app: ASGIApp) -> ASGIApp:
    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            match = _PATH.fullmatch(scope.get("path", ""))
            if match and match.group(1) in PLATFORMS:
                await _webhook_post(match.group(1), scope, receive, send)
                return
        await app(scope, receive, send)

    return application
