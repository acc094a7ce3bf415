"""The widget's thumbs up/down (the ``feedback`` frame) through the real consumer and Redis channel layer: a
visitor rates only finished agent replies of its own conversations, at this business; every refusal stores
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from businesses.models import Business
from config.asgi import application
from messaging.models import Channel, Contact, Conversation, Message
from messaging.visitors import visitor_token_issue
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _thread(business: Business, visitor_id: str, *, reply_status: str = Message.Status.DONE) -> Message:
    """A widget conversation of ``visitor_id``: a question and the agent's reply (returned)."""
    contact, _ = Contact.objects.get_or_create(
        business=business, channel=Channel.WIDGET, external_id=visitor_id
    )
    conversation = Conversation.objects.create(business=business, contact=contact, channel=Channel.WIDGET)
    question = Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.CUSTOMER,
        text="Do you sell tents?",
        status=Message.Status.ANSWERED,
    )
    return Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.AGENT,
        text="Yes: the Ridgeline tent.",
        status=reply_status,
        reply_to=question,
    )


async def _socket(business: Business, token: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", b"https://shop.example")]
    )
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "hello", "visitor_token": token})
    ready: dict[str, Any] = await ws.receive_json_from(timeout=5)
    assert ready["type"] == "ready"
    return ws, ready


def _rating(message_id: int) -> tuple[str, str, bool]:
    m = Message.objects.get(pk=message_id)
    return m.rating, m.rating_comment, m.rated_at is not None


async def test_a_visitor_rates_a_reply_and_can_change_it() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    reply = await database_sync_to_async(_thread)(business, visitor)
    ws, _ = await _socket(business, token)

    await ws.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": "up"})
    assert await ws.receive_json_from(timeout=5) == {
        "type": "feedback.saved",
        "message_id": reply.pk,
        "rating": "up",
    }
    assert await database_sync_to_async(_rating)(reply.pk) == ("up", "", True)

    await ws.send_json_to(
        {"type": "feedback", "message_id": reply.pk, "rating": "down", "comment": "  Wrong size  "}
    )
    assert (await ws.receive_json_from(timeout=5))["rating"] == "down"
    assert await database_sync_to_async(_rating)(reply.pk) == ("down", "Wrong size", True)
    await ws.disconnect()

    # The history a returning visitor gets shows the rating it chose (the widget's buttons show it).
    ws, ready = await _socket(business, token)
    by_id = {m["id"]: m for m in ready["history"]}
    assert by_id[reply.pk]["rating"] == "down"
    assert "rating" not in by_id[reply.reply_to_id]
    await ws.disconnect()


async def test_replies_of_another_visitor_or_business_cannot_be_rated() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    other_business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    _, someone_else = visitor_token_issue(business.pk)
    theirs = await database_sync_to_async(_thread)(business, someone_else)
    # Another business's reply, even in a conversation of a contact with this very visitor id.
    foreign = await database_sync_to_async(_thread)(other_business, visitor)
    mine = await database_sync_to_async(_thread)(business, visitor)
    streaming = await database_sync_to_async(_thread)(
        business, visitor, reply_status=Message.Status.STREAMING
    )
    ws, _ = await _socket(business, token)
    refused = {
        "type": "error",
        "code": "message_not_found",
        "detail": "No finished reply of yours has that id.",
    }
    for message_id in (theirs.pk, foreign.pk, mine.reply_to_id, streaming.pk, 10**9):
        await ws.send_json_to({"type": "feedback", "message_id": message_id, "rating": "down"})
        assert await ws.receive_json_from(timeout=5) == refused
    rated = await database_sync_to_async(
        lambda: Message.objects.exclude(rating="").count() + Message.objects.exclude(rated_at=None).count()
    )()
    assert rated == 0
    await ws.disconnect()


async def test_bad_feedback_frames_are_refused() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    reply = await database_sync_to_async(_thread)(business, visitor)
    ws, _ = await _socket(business, token)
    cases = [
        ({"rating": "up"}, "bad_frame"),
        ({"message_id": str(reply.pk), "rating": "up"}, "bad_frame"),
        ({"message_id": True, "rating": "up"}, "bad_frame"),
        ({"message_id": reply.pk, "rating": "meh"}, "bad_rating"),
        ({"message_id": reply.pk}, "bad_rating"),
        ({"message_id": reply.pk, "rating": "up", "comment": "x" * 501}, "bad_rating"),
        ({"message_id": reply.pk, "rating": "up", "comment": 5}, "bad_rating"),
    ]
    for fields, code in cases:
        await ws.send_json_to({"type": "feedback", **fields})
        frame = await ws.receive_json_from(timeout=5)
        assert (frame["type"], frame["code"]) == ("error", code), fields
    assert await database_sync_to_async(_rating)(reply.pk) == ("", "", False)
    await ws.disconnect()


async def test_feedback_before_hello_is_refused() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    _, visitor = visitor_token_issue(business.pk)
    reply = await database_sync_to_async(_thread)(business, visitor)
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", b"https://shop.example")]
    )
    await ws.connect()
    await ws.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": "up"})
    assert (await ws.receive_json_from(timeout=5))["code"] == "hello_required"
    assert await database_sync_to_async(_rating)(reply.pk) == ("", "", False)
    await ws.disconnect()


async def test_feedback_is_rate_limited(settings: Any) -> None:
    settings.CHAT_VISITOR_FEEDBACK_PER_MINUTE = 2
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    reply = await database_sync_to_async(_thread)(business, visitor)
    ws, _ = await _socket(business, token)
    for rating in ("up", "down"):
        await ws.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": rating})
        assert (await ws.receive_json_from(timeout=5))["type"] == "feedback.saved"
    await ws.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": "up"})
    assert await ws.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "feedback_rate_limited",
        "detail": "Too many ratings; wait a minute.",
    }
    assert (await database_sync_to_async(_rating)(reply.pk))[0] == "down"
    await ws.disconnect()
