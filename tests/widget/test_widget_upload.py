"""The widget's photo upload (``POST /api/widget/<key>/uploads``, docs/widget.md "Photos"), through the project's
real ASGI application (its body cap included), real PostgreSQL, real Redis (the broker's ``replies`` queue, the
rate limits, the channel layer) and the chat consumer: a photo is stored as the visitor's message being read,
with its file under the business's folder and its reading queued, and is told to the visitor's open sockets,
which join its conversation. Every refusal stores, queues and counts nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test.client import MULTIPART_CONTENT

from config.asgi import application
from messaging import streams
from messaging.media_reading import media_read
from messaging.models import Channel, Conversation, Message, MessageMedia, conversation_group, visitor_group
from messaging.services import conversation_handoff, conversation_open
from messaging.visitors import playground_token_issue, visitor_token_issue
from messaging.widget_asgi import TOO_LARGE, upload_body_cap, upload_max_body_bytes
from tests.factories import BusinessFactory
from tests.fixtures.asgi import asgi_call, close_async_connections
from tests.fixtures.media import JPEG
from tests.fixtures.uploads import (
    ORIGIN,
    assert_nothing_stored,
    files_under,
    photo_form,
    queued_readings,
    stored,
    widget_upload,
)

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(300)
WEBP = b"RIFF\x00\x01\x00\x00WEBPVP8 " + bytes(300)
GIF = b"GIF89a" + bytes(200)


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    close_async_connections()


@pytest.fixture
async def shop(catalog_media: Path) -> Any:
    """A business allowed on ORIGIN; photos are stored under a temporary MEDIA_ROOT."""
    return await database_sync_to_async(BusinessFactory)()


async def socket(business: Any, token: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", ORIGIN.encode())]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "hello", "visitor_token": token})
    ready: dict[str, Any] = await ws.receive_json_from(timeout=5)
    assert ready["type"] == "ready"
    return ws, ready


# --- Stored, queued, told -----------------------------------------------------------------------------------


async def test_a_photo_is_stored_being_read_queued_and_told_to_the_visitors_socket(
    shop: Any, catalog_media: Path
) -> None:
    token, visitor = visitor_token_issue(shop.pk)
    # The visitor's first action is the photo: its socket is in no conversation yet.
    ws, ready = await socket(shop, token)
    assert ready["conversation_id"] is None

    status, headers, body = await widget_upload(
        shop.widget_key, photo_form(caption="  Do you have this in blue?  "), token=token
    )

    assert status == 202
    # CORS for this origin only, no credentials.
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    assert headers[b"vary"] == b"Origin"
    assert b"access-control-allow-credentials" not in headers
    message = await Message.objects.select_related("conversation__contact").aget()
    assert body == {
        "message": {
            "id": message.pk,
            "conversation_id": message.conversation_id,
            "role": "customer",
            "text": "Do you have this in blue?",
            "status": "preparing",
            "client_id": "p-1",
            "cards": [],
            "created_at": message.created_at.isoformat(),
            "media": [{"kind": "image", "caption": "Do you have this in blue?"}],
        }
    }
    assert (message.business_id, message.channel, message.status) == (shop.pk, Channel.WIDGET, "preparing")
    assert (message.conversation.contact.external_id, message.conversation.preview) == (visitor, False)
    media = await MessageMedia.objects.aget()
    assert (media.business_id, media.message_id, media.kind, media.state) == (
        shop.pk,
        message.pk,
        "image",
        "pending",
    )
    assert (media.content_type, media.size, media.source) == ("image/jpeg", len(JPEG), "")
    assert media.file.name.startswith(f"messages/{shop.pk}/") and media.file.name.endswith(".jpg")
    assert files_under(catalog_media) == [catalog_media / media.file.name]
    assert (catalog_media / media.file.name).read_bytes() == JPEG
    assert await queued_readings() == [[media.pk]]

    # The visitor's socket gets the message, and is now in its conversation: the reply streams to it.
    assert await ws.receive_json_from(timeout=5) == {"type": "message.created", "message": body["message"]}
    note = {**body["message"], "id": message.pk + 1, "role": "agent", "text": "Yes!", "status": "done"}
    await get_channel_layer().group_send(
        conversation_group(message.conversation_id), {"type": "message.created", "message": note}
    )
    assert await ws.receive_json_from(timeout=5) == {"type": "message.created", "message": note}
    await ws.disconnect()

    # Read (no endpoint sees images here: the caption is the question); after a reload the history says the
    # message carried a photo, with the visitor's own words, whatever question the agent read.
    assert await database_sync_to_async(media_read)(media_id=media.pk) == "unread"
    ws, ready = await socket(shop, token)
    (first,) = ready["history"]
    assert (first["id"], first["status"], first["media"]) == (
        message.pk,
        "received",
        [{"kind": "image", "caption": "Do you have this in blue?"}],
    )
    await ws.disconnect()


async def test_png_and_webp_are_taken_and_a_photo_needs_no_caption(shop: Any) -> None:
    token, _ = visitor_token_issue(shop.pk)
    for n, data in enumerate((PNG, WEBP)):
        status, _, body = await widget_upload(
            shop.widget_key, photo_form(data, client_message_id=f"p-{n}"), token=token
        )
        assert (status, body["message"]["text"]) == (202, "[image]")
    types = await database_sync_to_async(
        lambda: list(MessageMedia.objects.order_by("pk").values_list("content_type", flat=True))
    )()
    assert types == ["image/png", "image/webp"]


async def test_a_retry_with_the_same_client_message_id_stores_nothing_new(
    shop: Any, catalog_media: Path
) -> None:
    token, _ = visitor_token_issue(shop.pk)
    first = await widget_upload(shop.widget_key, photo_form(caption="this?"), token=token)
    # The answer was lost on the way: the widget sends the same photo with the same id.
    again = await widget_upload(shop.widget_key, photo_form(caption="this?"), token=token)
    assert (first[0], again[0]) == (202, 202)
    assert again[2] == first[2]
    assert await stored() == (1, 1, 1)
    assert len(files_under(catalog_media)) == 1
    assert len(await queued_readings()) == 1


async def test_a_playground_token_opens_a_preview_conversation(shop: Any) -> None:
    token, _ = visitor_token_issue(shop.pk)
    other = await database_sync_to_async(BusinessFactory)()
    # Another business's playground token is no playground here.
    status, _, _ = await widget_upload(
        shop.widget_key, photo_form(), token=token, preview=playground_token_issue(other.pk)
    )
    assert status == 202
    assert await Conversation.objects.filter(preview=True).aexists() is False
    playground, _ = visitor_token_issue(shop.pk)
    status, _, body = await widget_upload(
        shop.widget_key, photo_form(), token=playground, preview=playground_token_issue(shop.pk)
    )
    assert status == 202
    conversation = await Conversation.objects.aget(pk=body["message"]["conversation_id"])
    assert conversation.preview is True


async def test_a_photo_in_a_conversation_staff_have_is_stored_for_them(shop: Any) -> None:
    token, visitor = visitor_token_issue(shop.pk)

    def taken_over() -> Conversation:
        conversation = conversation_open(business=shop, channel=Channel.WIDGET, contact_external_id=visitor)
        taken = conversation_handoff(business=shop, conversation_id=conversation.pk, reason="staff")
        assert taken is not None
        return taken

    conversation = await database_sync_to_async(taken_over)()
    status, _, body = await widget_upload(shop.widget_key, photo_form(), token=token)
    assert status == 202
    assert (body["message"]["conversation_id"], body["message"]["status"]) == (conversation.pk, "preparing")
    # Its reading settles it as skipped: staff answer (messaging.media_reading).
    assert len(await queued_readings()) == 1


# --- Refusals -------------------------------------------------------------------------------------------------


async def test_an_unknown_key_and_a_foreign_origin_are_refused_without_cors(
    shop: Any, catalog_media: Path
) -> None:
    token, _ = visitor_token_issue(shop.pk)
    status, headers, body = await widget_upload("pk_nope", photo_form(), token=token)
    assert (status, body["code"]) == (404, "unknown_widget")
    assert b"access-control-allow-origin" not in headers
    for origin in ("https://evil.example", None):
        status, headers, body = await widget_upload(shop.widget_key, photo_form(), token=token, origin=origin)
        assert (status, body["code"]) == (403, "origin_not_allowed")
        assert b"access-control-allow-origin" not in headers
    await assert_nothing_stored(catalog_media)


async def test_a_missing_or_foreign_visitor_token_is_refused(shop: Any, catalog_media: Path) -> None:
    other = await database_sync_to_async(BusinessFactory)()
    foreign, _ = visitor_token_issue(other.pk)
    for token in (None, "", "forged.token", foreign):
        status, headers, body = await widget_upload(shop.widget_key, photo_form(), token=token)
        assert (status, body["code"]) == (401, "bad_visitor_token"), token
        assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    await assert_nothing_stored(catalog_media)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (photo_form(None), "no_file"),
        (photo_form(client_message_id=None), "bad_request"),
        (photo_form(client_message_id="x" * 65), "bad_request"),
        (photo_form(caption="x" * 2001), "too_long"),
        (photo_form(caption="a\x00b"), "bad_request"),
        (photo_form(client_message_id="p\x00"), "bad_request"),
    ],
    ids=["no-file", "no-client-id", "client-id-too-long", "caption-too-long", "nul-caption", "nul-client-id"],
)
async def test_a_bad_form_is_a_400(shop: Any, catalog_media: Path, body: bytes, code: str) -> None:
    token, _ = visitor_token_issue(shop.pk)
    status, headers, answer = await widget_upload(shop.widget_key, body, token=token)
    assert (status, answer["code"]) == (400, code)
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    await assert_nothing_stored(catalog_media)


async def test_a_body_that_is_no_multipart_form_is_a_400(shop: Any, catalog_media: Path) -> None:
    token, _ = visitor_token_issue(shop.pk)
    body = b'{"file": "nope"}'
    status, _, answer = await widget_upload(
        shop.widget_key, body, token=token, content_type="multipart/form-data; boundary="
    )
    assert (status, answer["code"]) == (400, "bad_request")
    await assert_nothing_stored(catalog_media)


async def test_what_is_not_a_jpeg_png_or_webp_is_a_415_whatever_its_name_says(
    shop: Any, catalog_media: Path
) -> None:
    token, _ = visitor_token_issue(shop.pk)
    for data in (GIF, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b""):
        status, _, answer = await widget_upload(shop.widget_key, photo_form(data), token=token)
        assert (status, answer) == (
            415,
            {"code": "not_an_image", "detail": "Photos are JPEG, PNG or WebP images."},
        )
    await assert_nothing_stored(catalog_media)


async def test_a_photo_over_the_limit_is_a_413(shop: Any, catalog_media: Path, settings: Any) -> None:
    settings.MESSAGE_MEDIA_MAX_BYTES = len(JPEG) - 1
    token, _ = visitor_token_issue(shop.pk)
    status, headers, answer = await widget_upload(shop.widget_key, photo_form(), token=token)
    assert status == 413 and answer["code"] == "too_large"
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    await assert_nothing_stored(catalog_media)


async def test_a_declared_length_over_the_cap_is_a_413_before_the_body_is_read(
    shop: Any, catalog_media: Path
) -> None:
    token, _ = visitor_token_issue(shop.pk)
    status, headers, answer = await widget_upload(
        shop.widget_key, photo_form(), token=token, length=upload_max_body_bytes() + 1
    )
    assert (status, answer) == (413, {"code": "too_large", "detail": "Photos are at most 5 MB."})
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    await assert_nothing_stored(catalog_media)


async def test_too_many_uploads_are_a_429_with_retry_after_and_count_nothing(
    shop: Any, catalog_media: Path, settings: Any
) -> None:
    settings.CHAT_VISITOR_UPLOADS_PER_MINUTE = 2
    token, _ = visitor_token_issue(shop.pk)
    statuses = [
        (await widget_upload(shop.widget_key, photo_form(client_message_id=f"p-{n}"), token=token))[0]
        for n in range(2)
    ]
    assert statuses == [202, 202]
    status, headers, answer = await widget_upload(
        shop.widget_key, photo_form(client_message_id="p-2"), token=token
    )
    assert (status, answer["code"], headers[b"retry-after"]) == (429, "upload_rate_limited", b"60")
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    assert (await stored())[:2] == (2, 2)
    assert len(files_under(catalog_media)) == 2
    # Another visitor of the same address is counted apart by the visitor limit; the address's own upload
    # limit binds them all.
    settings.CHAT_ADDRESS_UPLOADS_PER_MINUTE = 3
    second, _ = visitor_token_issue(shop.pk)
    assert (await widget_upload(shop.widget_key, photo_form(client_message_id="q-0"), token=second))[0] == 202
    status, _, answer = await widget_upload(
        shop.widget_key, photo_form(client_message_id="q-1"), token=second
    )
    assert (status, answer["code"]) == (429, "upload_rate_limited")
    assert (await stored())[:2] == (3, 3)


async def test_an_upload_is_a_message_of_the_visitor_for_the_message_limits(shop: Any, settings: Any) -> None:
    settings.CHAT_VISITOR_MESSAGES_PER_MINUTE = 1
    token, _ = visitor_token_issue(shop.pk)
    assert (await widget_upload(shop.widget_key, photo_form(client_message_id="p-0"), token=token))[0] == 202
    status, _, answer = await widget_upload(shop.widget_key, photo_form(client_message_id="p-1"), token=token)
    assert (status, answer["code"]) == (429, "rate_limited")
    assert (await stored())[:2] == (1, 1)


# --- Preflight ------------------------------------------------------------------------------------------------


async def test_the_preflight_is_answered_for_an_allowed_origin_only(shop: Any) -> None:
    request = [
        (b"origin", ORIGIN.encode()),
        (b"access-control-request-method", b"POST"),
        (b"access-control-request-headers", b"x-bizagent-visitor"),
    ]
    path = f"/api/widget/{shop.widget_key}/uploads"
    status, headers, _ = await asgi_call("OPTIONS", path, headers=request)
    assert status == 204
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    assert headers[b"access-control-allow-methods"] == b"POST"
    assert headers[b"access-control-allow-headers"] == b"X-Bizagent-Visitor, X-Bizagent-Preview"
    assert headers[b"access-control-max-age"] == b"3600"
    assert headers[b"vary"] == b"Origin"
    status, headers, _ = await asgi_call("OPTIONS", path, headers=[(b"origin", b"https://evil.example")])
    assert status == 403 and b"access-control-allow-origin" not in headers
    status, headers, _ = await asgi_call("OPTIONS", "/api/widget/pk_nope/uploads", headers=request)
    assert status == 404 and b"access-control-allow-origin" not in headers
    status, _, _ = await asgi_call("GET", path, headers=request)
    assert status == 405


# --- The body cap (messaging.widget_asgi) ---------------------------------------------------------------------


async def capped_read(
    body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, bool, int]:
    """Run an upload request through the cap in front of an app that reads the body as Django does. Returns
    the body the app got, whether the scope was marked too large, and how many messages the client's side
    gave before the app had its body."""
    given = 0
    events = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks)
    ]

    async def receive() -> dict[str, Any]:
        nonlocal given
        given += 1
        return events.pop(0) if events else {"type": "http.disconnect"}

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen["body"], seen["given"] = body, given
        seen["marked"] = bool(scope.get(TOO_LARGE))
        # After its body Django listens for a disconnect: the rest of a cut body never reaches it.
        seen["after"] = (await receive())["type"]

    scope = {"type": "http", "method": "POST", "path": "/api/widget/k/uploads", "headers": headers}
    await upload_body_cap(app)(scope, receive, lambda message: None)
    assert seen["after"] == "http.disconnect"
    return seen["body"], seen["marked"], seen["given"]


async def test_the_cap_reads_no_byte_of_a_body_declared_too_large(settings: Any) -> None:
    limit = upload_max_body_bytes()
    body, marked, given = await capped_read(
        [b"x" * 1024] * 10, [(b"content-length", str(limit + 1).encode())]
    )
    assert (body, marked, given) == (b"", True, 0)


async def test_the_cap_cuts_a_body_without_a_length_at_the_limit(settings: Any) -> None:
    settings.MESSAGE_MEDIA_MAX_BYTES = 1024
    limit = upload_max_body_bytes()
    chunks = [b"x" * 1024] * (limit // 1024 + 50)
    body, marked, given = await capped_read(chunks, [])
    assert marked is True
    assert len(body) <= limit and given == limit // 1024 + 1
    # Within the limit, the body is passed through whole.
    body, marked, _ = await capped_read([b"y" * 1000, b"z" * 10], [(b"content-length", b"1010")])
    assert (body, marked) == (b"y" * 1000 + b"z" * 10, False)


async def test_a_chunked_body_over_the_cap_is_a_413_through_django(
    shop: Any, catalog_media: Path, settings: Any
) -> None:
    settings.MESSAGE_MEDIA_MAX_BYTES = 1024
    token, _ = visitor_token_issue(shop.pk)
    body = photo_form(b"\xff\xd8\xff" + bytes(upload_max_body_bytes()))
    headers = [
        (b"content-type", MULTIPART_CONTENT.encode()),
        (b"origin", ORIGIN.encode()),
        (b"x-bizagent-visitor", token.encode()),
    ]
    status, response_headers, text = await asgi_call(
        "POST", f"/api/widget/{shop.widget_key}/uploads", body, headers
    )
    assert (status, json.loads(text)["code"]) == (413, "too_large")
    assert response_headers[b"access-control-allow-origin"] == ORIGIN.encode()
    await assert_nothing_stored(catalog_media)


# --- The visitor's sockets ------------------------------------------------------------------------------------


async def test_every_socket_of_the_visitor_is_told_and_a_late_join_catches_up(shop: Any) -> None:
    token, visitor = visitor_token_issue(shop.pk)
    first, _ = await socket(shop, token)
    second, _ = await socket(shop, token)

    def reply_began() -> tuple[Message, Message, Message]:
        # The photo, its fixed note, and a reply still streaming: all stored before the sockets heard of it
        # (the group's events for them went to no socket of this visitor).
        conversation = conversation_open(business=shop, channel=Channel.WIDGET, contact_external_id=visitor)
        common = {"business": shop, "conversation": conversation, "channel": Channel.WIDGET}
        photo = Message.objects.create(role="customer", text="[image]", status="preparing", **common)
        note = Message.objects.create(role="agent", text="Thanks for the photo!", status="done", **common)
        streaming = Message.objects.create(role="agent", text="", status="streaming", **common)
        return photo, note, streaming

    photo, note, streaming = await database_sync_to_async(reply_began)()
    await streams.log_append(streaming.pk, {"seq": 1, "text": "We have ", "reset": False})
    payload = {
        "id": photo.pk,
        "conversation_id": photo.conversation_id,
        "role": "customer",
        "text": "[image]",
        "status": "preparing",
        "client_id": "",
        "cards": [],
        "created_at": photo.created_at.isoformat(),
    }
    await get_channel_layer().group_send(
        visitor_group(shop.pk, visitor), {"type": "visitor.message", "message": payload}
    )
    for ws in (first, second):
        assert await ws.receive_json_from(timeout=5) == {"type": "message.created", "message": payload}
        caught_up = [await ws.receive_json_from(timeout=5) for _ in range(3)]
        assert [(f["type"], f.get("message", {}).get("id")) for f in caught_up] == [
            ("message.created", note.pk),
            ("message.created", streaming.pk),
            ("delta", None),
        ]
        assert caught_up[0]["message"]["text"] == "Thanks for the photo!"
        assert caught_up[1]["message"]["text"] == ""  # its text comes as deltas, from the log
        assert caught_up[2] == {"type": "delta", "message_id": streaming.pk, "seq": 1, "text": "We have "}
    # Both are in the conversation now: its live events reach them, the log's delta not twice.
    await streams.log_append(
        streaming.pk,
        {"seq": 2, "text": "it.", "reset": False},
        then_send=(
            conversation_group(photo.conversation_id),
            {
                "type": "reply.delta",
                "message_id": streaming.pk,
                "seq": 2,
                "text": "it.",
                "reset": False,
                "sent_at": 0.0,
            },
        ),
    )
    for ws in (first, second):
        frame = await ws.receive_json_from(timeout=5)
        assert (frame["type"], frame["seq"], frame["text"]) == ("delta", 2, "it.")
        assert await ws.receive_nothing(timeout=0.2)
        await ws.disconnect()
