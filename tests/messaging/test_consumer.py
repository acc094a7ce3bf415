"""The chat consumer through the real Redis channel layer (WebsocketCommunicator): limits, tokens, errors.

Every refusal sends an ``error`` frame and stores nothing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from messaging.models import Conversation, Message
from messaging.visitors import visitor_from_token, visitor_token_issue
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(business: Any, origin: str = "https://shop.example") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", origin.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def hello(communicator: WebsocketCommunicator, **fields: Any) -> dict[str, Any]:
    await communicator.send_json_to({"type": "hello", **fields})
    frame: dict[str, Any] = await communicator.receive_json_from(timeout=5)
    return frame


async def counts() -> tuple[int, int]:
    return await database_sync_to_async(lambda: (Message.objects.count(), Conversation.objects.count()))()


@pytest.fixture
async def business() -> Any:
    return await database_sync_to_async(BusinessFactory)()


async def test_hello_issues_a_token_and_a_known_token_is_kept(business: Any) -> None:
    ws = await connect(business)
    ready = await hello(ws)
    assert ready["type"] == "ready"
    visitor = visitor_from_token(business.pk, ready["visitor_token"])
    assert visitor is not None
    await ws.disconnect()
    ws = await connect(business)
    again = await hello(ws, visitor_token=ready["visitor_token"])
    assert again["visitor_token"] == ready["visitor_token"]
    await ws.disconnect()


async def test_a_token_of_another_business_is_not_accepted(business: Any) -> None:
    other = await database_sync_to_async(BusinessFactory)()
    foreign, _ = visitor_token_issue(other.pk, "v-of-other")
    assert visitor_from_token(business.pk, foreign) is None
    ws = await connect(business)
    ready = await hello(ws, visitor_token=foreign)
    assert ready["visitor_token"] != foreign
    assert visitor_from_token(business.pk, ready["visitor_token"]) != "v-of-other"
    await ws.disconnect()


async def test_unknown_widget_key() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/pk_nope/", headers=[(b"origin", b"https://x")]
    )
    await communicator.connect()
    assert await communicator.receive_json_from() == {
        "type": "error",
        "code": "unknown_widget",
        "detail": "No business has this widget key.",
    }
    assert (await communicator.receive_output())["code"] == 4404
    # The browser answers a close with its own disconnect; without it the consumer waits forever.
    await communicator.disconnect()


async def test_origin_must_be_allowed_even_with_allowed_hosts_star(business: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["*"]
    ws = await connect(business, origin="https://evil.example")
    assert (await ws.receive_json_from())["code"] == "origin_not_allowed"
    assert (await ws.receive_output())["code"] == 4403
    await ws.disconnect()
    assert await counts() == (0, 0)


async def test_message_before_hello_and_bad_frames(business: Any) -> None:
    ws = await connect(business)
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": "hi"})
    assert (await ws.receive_json_from())["code"] == "hello_required"
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from())["code"] == "bad_frame"
    await hello(ws)
    await ws.send_json_to({"type": "message", "text": "no id"})
    assert (await ws.receive_json_from())["code"] == "bad_frame"
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": "   "})
    assert (await ws.receive_json_from())["code"] == "empty_message"
    assert await counts() == (0, 0)
    await ws.disconnect()


async def test_a_nul_character_in_any_frame_is_refused_and_the_socket_stays_open(business: Any) -> None:
    """PostgreSQL stores no NUL in text: a message, a contact detail or a comment holding one used to fail the
    write and close the socket. It is refused at the door, and the socket goes on."""
    ws = await connect(business)
    await ws.send_json_to(
        {"type": "hello", "visitor_token": None, "conversation_id": None, "contact": {"name": "Ada\x00"}}
    )
    assert (await ws.receive_json_from())["code"] == "bad_frame"
    await hello(ws)
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": "tents?\x00"})
    refused = await ws.receive_json_from()
    assert (refused["type"], refused["code"]) == ("error", "bad_frame")
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from())["type"] == "pong"
    assert await counts() == (0, 0)
    await ws.disconnect()


async def test_message_size_limit(business: Any, settings: Any) -> None:
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    ws = await connect(business)
    await hello(ws)
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": "x" * 11})
    assert await ws.receive_json_from() == {
        "type": "error",
        "code": "too_long",
        "detail": "Messages are at most 10 characters.",
        "client_id": "c1",
    }
    assert await counts() == (0, 0)
    await ws.disconnect()


async def test_messages_per_minute_per_visitor(business: Any, settings: Any) -> None:
    settings.CHAT_VISITOR_MESSAGES_PER_MINUTE = 2
    ws = await connect(business)
    await hello(ws)
    for i in range(2):
        await ws.send_json_to({"type": "message", "client_id": f"c{i}", "text": "hi"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "message.created"
    await ws.send_json_to({"type": "message", "client_id": "c2", "text": "hi"})
    frame = await ws.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"], frame["client_id"]) == ("error", "rate_limited", "c2")
    assert await counts() == (2, 1)
    # Another visitor is not limited by this one.
    other = await connect(business)
    await hello(other)
    await other.send_json_to({"type": "message", "client_id": "o1", "text": "hi"})
    assert (await other.receive_json_from(timeout=5))["type"] == "message.created"
    await ws.disconnect()
    await other.disconnect()


async def test_messages_per_minute_per_business(business: Any, settings: Any) -> None:
    settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE = 1
    first, second = await connect(business), await connect(business)
    await hello(first)
    await hello(second)
    await first.send_json_to({"type": "message", "client_id": "a", "text": "hi"})
    assert (await first.receive_json_from(timeout=5))["type"] == "message.created"
    await second.send_json_to({"type": "message", "client_id": "b", "text": "hi"})
    frame = await second.receive_json_from(timeout=5)
    assert frame.get("code") == "business_rate_limited", frame
    assert await counts() == (1, 1)
    await first.disconnect()
    await second.disconnect()


async def test_concurrent_connections_per_visitor(business: Any, settings: Any) -> None:
    settings.CHAT_VISITOR_MAX_CONNECTIONS = 2
    token, _ = visitor_token_issue(business.pk)
    sockets = [await connect(business) for _ in range(3)]
    assert (await hello(sockets[0], visitor_token=token))["type"] == "ready"
    assert (await hello(sockets[1], visitor_token=token))["type"] == "ready"
    refused = await hello(sockets[2], visitor_token=token)
    assert refused["code"] == "too_many_connections"
    assert (await sockets[2].receive_output())["code"] == 4429
    await sockets[2].disconnect()
    # Closing one frees a slot.
    await sockets[0].disconnect()
    again = await connect(business)
    assert (await hello(again, visitor_token=token))["type"] == "ready"
    for ws in (sockets[1], again):
        await ws.disconnect()


async def test_identify_details_are_kept_on_the_visitors_contact_of_this_business_only(business: Any) -> None:
    from messaging.models import Contact

    other = await database_sync_to_async(BusinessFactory)()
    ws = await connect(business)
    details = {"name": " Ada  Lovelace ", "email": "not-an-email", "phone": "+44 20 7946 0000", "x": "y"}
    ready = await hello(ws, contact={**details, "external_id": "cust-42", "admin": True})
    visitor = visitor_from_token(business.pk, ready["visitor_token"])
    await ws.disconnect()
    ws = await connect(business)
    await hello(ws, contact={"name": 7, "email": ["a"]})  # nothing usable: ignored, nothing stored
    await ws.disconnect()

    rows = await database_sync_to_async(
        lambda: list(
            Contact.objects.values_list("business_id", "external_id", "name", "email", "phone", "reference")
        )
    )()
    assert rows == [(business.pk, visitor, "Ada Lovelace", "", "+44 20 7946 0000", "cust-42")]
    assert other.pk not in {row[0] for row in rows}
    assert await counts() == (0, 0)  # identifying stores no message and opens no conversation


async def test_a_burst_across_a_minute_boundary_is_limited_once(monkeypatch: Any) -> None:
    from messaging import ratelimits

    clock = iter([1_000_019.9, 1_000_020.0, 1_000_020.1, 1_000_079.0, 1_000_080.5, 1_000_081.0])
    # Only the limiter's clock (1_000_020 starts a window): Redis and asyncio keep the real one.
    monkeypatch.setattr(ratelimits, "time", SimpleNamespace(time=lambda: next(clock)))
    allowed = [await ratelimits.hit("boundary", limit=1) for _ in range(6)]
    # The last second of a window: allowed. Right after the boundary, a new window but the last minute
    # already had one: refused (and not counted). 59.1 s after the first: still refused. A minute after it:
    # allowed, and the next one again refused.
    assert allowed == [True, False, False, False, True, False]


async def test_a_replys_created_rides_on_its_first_delta_and_is_not_sent_after_it(business: Any) -> None:
    from channels.layers import get_channel_layer

    ws = await connect(business)
    await hello(ws)
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": "hi"})
    customer = await ws.receive_json_from(timeout=5)
    group = f"conv.{customer['message']['conversation_id']}"
    reply = {
        **customer["message"],
        "id": customer["message"]["id"] + 1,
        "role": "agent",
        "text": "",
        "status": "streaming",
        "client_id": "",
    }
    first = {
        "type": "reply.delta",
        "message_id": reply["id"],
        "seq": 1,
        "text": "Hel",
        "reset": False,
        "created": reply,
    }
    layer = get_channel_layer()
    await layer.group_send(group, first)
    await layer.group_send(group, first)  # again (as a resumed socket gets what the log gave it already)
    second = {key: value for key, value in first.items() if key != "created"} | {"seq": 2, "text": "lo"}
    await layer.group_send(group, second)
    frames = [await ws.receive_json_from(timeout=5) for _ in range(3)]
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("message.created", None),
        ("delta", 1),
        ("delta", 2),
    ]
    assert frames[0]["message"] == reply
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()
