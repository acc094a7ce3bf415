"""The ASGI fast path for webhook POSTs, driven through the project's real ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from common import aio
from config.asgi import application
from messaging.models import WebhookDelivery
from tests.fixtures.meta import VERIFY_TOKEN, signed, wa_change, wa_delivery, wa_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_webhook_connections() -> Iterator[None]:
    yield
    aio.close_database_connections()
    # The async ORM calls of these tests ran on asgiref's shared thread: close its connection too.
    asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())


async def call(
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP request through the ASGI interface; the body arrives in 1 KiB chunks, as servers send it."""
    chunks = [body[i : i + 1024] for i in range(0, len(body), 1024)] or [b""]
    events = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        # The client stays connected: Django listens for a disconnect while it answers.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await application(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body_out


async def count() -> int:
    return await WebhookDelivery.objects.acount()


async def test_signed_post_is_stored_and_acknowledged(meta_app: None) -> None:
    payload = wa_delivery(wa_change("106540352242922", messages=[wa_text("Café ☕ " * 300, wamid="wamid.F")]))
    body, header = signed(payload)
    assert len(body) > 4096  # several body chunks
    status, headers, text = await call(
        "POST",
        "/webhooks/whatsapp",
        body,
        [(b"content-type", b"application/json"), (b"x-hub-signature-256", header.encode())],
    )
    assert (status, text, headers[b"content-type"]) == (200, b"EVENT_RECEIVED", b"text/plain")
    delivery = await WebhookDelivery.objects.aget()
    assert (bytes(delivery.body), delivery.platform, delivery.signature) == (body, "whatsapp", header)


async def test_bad_signature_oversize_and_unknown_platform_store_nothing(
    meta_app: None, settings: Any
) -> None:
    body, header = signed(wa_delivery())
    status, _, _ = await call(
        "POST", "/webhooks/whatsapp", body, [(b"x-hub-signature-256", b"sha256=" + b"0" * 64)]
    )
    assert status == 403
    status, _, _ = await call("POST", "/webhooks/whatsapp", body)
    assert status == 403
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 50
    status, _, text = await call(
        "POST", "/webhooks/whatsapp", body, [(b"x-hub-signature-256", header.encode())]
    )
    assert (status, text) == (413, b"payload too large")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
    # Not a platform: Django answers (404 from the view), nothing stored.
    status, _, _ = await call("POST", "/webhooks/telegram", body, [(b"x-hub-signature-256", header.encode())])
    assert status == 404
    assert await count() == 0


async def test_get_handshake_still_goes_through_django(meta_app: None) -> None:
    query = f"hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}".encode()
    status, _, text = await call("GET", "/webhooks/whatsapp", query=query)
    assert (status, text) == (200, b"1158201444")
    status, _, _ = await call(
        "GET", "/webhooks/whatsapp", query=b"hub.mode=subscribe&hub.challenge=1&hub.verify_token=no"
    )
    assert status == 403
