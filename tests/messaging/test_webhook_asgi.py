"""The ASGI fast path for webhook POSTs, driven through the project's real ASGI application."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from messaging.models import WebhookDelivery
from tests.fixtures.asgi import asgi_call as call
from tests.fixtures.asgi import close_async_connections
from tests.fixtures.meta import VERIFY_TOKEN, signed, wa_change, wa_delivery, wa_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_webhook_connections() -> Iterator[None]:
    yield
    close_async_connections()


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
