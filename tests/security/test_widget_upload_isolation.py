"""Tenant isolation of the widget's photo upload (docs/security.md, "Chat socket"): a widget key, a visitor token
and a page origin must all be the same business's, or nothing is stored for anyone; what is stored is the key's
business's, in its own folder, and is told to that business's visitor only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from messaging.models import Conversation, MessageMedia
from messaging.visitors import visitor_token_issue
from tests.factories import BusinessFactory
from tests.fixtures.asgi import asgi_call, close_async_connections
from tests.fixtures.uploads import assert_nothing_stored, files_under, photo_form, widget_upload

pytestmark = pytest.mark.django_db(transaction=True)

A_SITE = "https://a-shop.example"
B_SITE = "https://b-shop.example"


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    close_async_connections()


@pytest.fixture
async def shops(catalog_media: Path) -> tuple[Any, Any]:
    make = database_sync_to_async(BusinessFactory)
    return await make(allowed_origins=[A_SITE]), await make(allowed_origins=[B_SITE])


async def test_a_visitor_token_of_another_business_stores_nothing(
    shops: tuple[Any, Any], catalog_media: Path
) -> None:
    a, b = shops
    b_token, _ = visitor_token_issue(b.pk)
    a_token, _ = visitor_token_issue(a.pk)
    for key, origin, token in ((a.widget_key, A_SITE, b_token), (b.widget_key, B_SITE, a_token)):
        status, _, answer = await widget_upload(key, photo_form(), token=token, origin=origin)
        assert (status, answer["code"]) == (401, "bad_visitor_token")
    await assert_nothing_stored(catalog_media)


async def test_an_origin_allowed_for_another_business_only_is_refused(
    shops: tuple[Any, Any], catalog_media: Path
) -> None:
    a, _ = shops
    a_token, _ = visitor_token_issue(a.pk)
    status, headers, answer = await widget_upload(a.widget_key, photo_form(), token=a_token, origin=B_SITE)
    assert (status, answer["code"]) == (403, "origin_not_allowed")
    assert b"access-control-allow-origin" not in headers
    # Its preflight too: a page on B's site gets no leave to send.
    status, headers, _ = await asgi_call(
        "OPTIONS",
        f"/api/widget/{a.widget_key}/uploads",
        headers=[(b"origin", B_SITE.encode()), (b"access-control-request-method", b"POST")],
    )
    assert status == 403 and b"access-control-allow-origin" not in headers
    await assert_nothing_stored(catalog_media)


async def test_a_photo_is_the_keys_business_and_told_to_its_visitor_only(
    shops: tuple[Any, Any], catalog_media: Path
) -> None:
    a, b = shops
    # One visitor id at both businesses: the tokens differ, and so do the visitors' groups.
    a_token, _ = visitor_token_issue(a.pk, "0123456789abcdef")
    b_token, _ = visitor_token_issue(b.pk, "0123456789abcdef")
    sockets = []
    for business, site, token in ((a, A_SITE, a_token), (b, B_SITE, b_token)):
        ws = WebsocketCommunicator(
            application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", site.encode())]
        )
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "hello", "visitor_token": token})
        assert (await ws.receive_json_from(timeout=5))["type"] == "ready"
        sockets.append(ws)

    status, _, answer = await widget_upload(a.widget_key, photo_form(), token=a_token, origin=A_SITE)

    assert status == 202
    media = await MessageMedia.objects.select_related("message__conversation").aget()
    assert (media.business_id, media.message.business_id, media.message.conversation.business_id) == (
        a.pk,
        a.pk,
        a.pk,
    )
    assert [p.relative_to(catalog_media).parts[:2] for p in files_under(catalog_media)] == [
        ("messages", str(a.pk))
    ]
    assert await Conversation.objects.filter(business=b).aexists() is False
    a_socket, b_socket = sockets
    assert await a_socket.receive_json_from(timeout=5) == {
        "type": "message.created",
        "message": answer["message"],
    }
    assert await b_socket.receive_nothing(timeout=0.3)
    for ws in sockets:
        await ws.disconnect()
