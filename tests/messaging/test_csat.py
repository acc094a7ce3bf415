"""Closing a conversation asks a widget customer "How did we do?" (the ``closed`` frame), and the answer (the
``csat`` frame) is stored only for a closed conversation of this visitor at this business."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from businesses.models import Business
from config.asgi import application
from messaging.models import Channel, Contact, Conversation, Message
from messaging.services import conversation_close, message_receive
from messaging.visitors import visitor_token_issue
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _conversation(
    business: Business, visitor_id: str, *, state: str = Conversation.State.BOT
) -> Conversation:
    contact, _ = Contact.objects.get_or_create(
        business=business, channel=Channel.WIDGET, external_id=visitor_id
    )
    conversation = Conversation.objects.create(
        business=business, contact=contact, channel=Channel.WIDGET, state=state
    )
    Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.CUSTOMER,
        text="Where is my order?",
        status=Message.Status.ANSWERED,
    )
    return conversation


async def _socket(business: Business, token: str, conversation_id: int) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", b"https://shop.example")]
    )
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "hello", "visitor_token": token, "conversation_id": conversation_id})
    ready = await ws.receive_json_from(timeout=5)
    assert (ready["type"], ready["conversation_id"]) == ("ready", conversation_id)
    return ws


def _csat(conversation_id: int) -> tuple[int | None, bool]:
    c = Conversation.objects.get(pk=conversation_id)
    return c.csat_score, c.csat_at is not None


async def test_closing_asks_the_customer_and_the_score_is_stored() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    conversation = await database_sync_to_async(_conversation)(business, visitor)
    ws = await _socket(business, token, conversation.pk)

    closed = await database_sync_to_async(conversation_close)(
        business=business, conversation_id=conversation.pk
    )
    assert closed is not None and closed.state == Conversation.State.CLOSED and closed.closed_at is not None
    assert await ws.receive_json_from(timeout=5) == {
        "type": "closed",
        "conversation_id": conversation.pk,
        "csat": True,
    }
    await ws.send_json_to({"type": "csat", "conversation_id": conversation.pk, "score": 4})
    assert await ws.receive_json_from(timeout=5) == {
        "type": "csat.saved",
        "conversation_id": conversation.pk,
        "score": 4,
    }
    assert await database_sync_to_async(_csat)(conversation.pk) == (4, True)
    await ws.send_json_to({"type": "csat", "conversation_id": conversation.pk, "score": 5})
    assert (await ws.receive_json_from(timeout=5))["score"] == 5
    assert await database_sync_to_async(_csat)(conversation.pk) == (5, True)

    # Closing again says nothing more.
    await database_sync_to_async(conversation_close)(business=business, conversation_id=conversation.pk)
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()

    # The customer's next message starts a new conversation.
    message = await database_sync_to_async(message_receive)(
        business=business,
        channel=Channel.WIDGET,
        contact_external_id=visitor,
        text="One more question",
        client_message_id="c-2",
        conversation_id=conversation.pk,
    )
    assert message is not None and message.conversation_id != conversation.pk


async def test_a_score_for_a_conversation_not_closed_or_not_this_visitors_is_refused() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    other_business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    _, someone_else = visitor_token_issue(business.pk)
    mine_open = await database_sync_to_async(_conversation)(business, visitor)
    theirs = await database_sync_to_async(_conversation)(
        business, someone_else, state=Conversation.State.CLOSED
    )
    foreign = await database_sync_to_async(_conversation)(
        other_business, visitor, state=Conversation.State.CLOSED
    )
    ws = await _socket(business, token, mine_open.pk)
    for conversation_id in (mine_open.pk, theirs.pk, foreign.pk, 10**9):
        await ws.send_json_to({"type": "csat", "conversation_id": conversation_id, "score": 1})
        assert await ws.receive_json_from(timeout=5) == {
            "type": "error",
            "code": "csat_not_found",
            "detail": "No closed conversation of yours has that id.",
        }
    for fields, code in [
        ({"score": 3}, "bad_frame"),
        ({"conversation_id": str(theirs.pk), "score": 3}, "bad_frame"),
        ({"conversation_id": mine_open.pk, "score": 0}, "bad_rating"),
        ({"conversation_id": mine_open.pk, "score": 6}, "bad_rating"),
        ({"conversation_id": mine_open.pk, "score": "5"}, "bad_rating"),
        ({"conversation_id": mine_open.pk, "score": True}, "bad_rating"),
    ]:
        await ws.send_json_to({"type": "csat", **fields})
        frame: dict[str, Any] = await ws.receive_json_from(timeout=5)
        assert (frame["type"], frame["code"]) == ("error", code), fields
    scored = await database_sync_to_async(
        lambda: (
            Conversation.objects.exclude(csat_score=None).count()
            + Conversation.objects.exclude(csat_at=None).count()
        )
    )()
    assert scored == 0
    await ws.disconnect()


async def test_another_business_cannot_close_the_conversation() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    other_business = await database_sync_to_async(BusinessFactory)()
    _, visitor = visitor_token_issue(business.pk)
    conversation = await database_sync_to_async(_conversation)(business, visitor)
    assert (
        await database_sync_to_async(conversation_close)(
            business=other_business, conversation_id=conversation.pk
        )
        is None
    )
    state = await database_sync_to_async(lambda: Conversation.objects.get(pk=conversation.pk).state)()
    assert state == Conversation.State.BOT


def _answered_and_closed(business: Business, visitor_id: str) -> Conversation:
    conversation = _conversation(business, visitor_id)
    Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.STAFF,
        text="It ships tomorrow.",
        status=Message.Status.DONE,
    )
    closed = conversation_close(business=business, conversation_id=conversation.pk)
    assert closed is not None
    return closed


async def _ready(business: Business, token: str) -> dict[str, Any]:
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", b"https://shop.example")]
    )
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "hello", "visitor_token": token})
    ready: dict[str, Any] = await ws.receive_json_from(timeout=5)
    await ws.disconnect()
    return ready


async def test_a_conversation_closed_while_the_visitor_was_away_is_asked_about_once_at_the_next_visit() -> (
    None
):
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    # Closed with no widget open: nobody was asked.
    conversation = await database_sync_to_async(_answered_and_closed)(business, visitor)
    ready = await _ready(business, token)
    assert (ready["conversation_id"], ready["csat_conversation_id"]) == (None, conversation.pk)
    # Asked once: the next visit does not ask again, and the score can still be given.
    assert (await _ready(business, token))["csat_conversation_id"] is None
    asked = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert asked.csat_asked_at is not None and asked.csat_score is None
    # Another visitor of the business, or one of another business, is never asked about it.
    other_token, _ = visitor_token_issue(business.pk)
    assert (await _ready(business, other_token))["csat_conversation_id"] is None


async def test_a_conversation_closed_while_the_widget_was_open_is_not_asked_about_again() -> None:
    business = await database_sync_to_async(BusinessFactory)()
    token, visitor = visitor_token_issue(business.pk)
    conversation = await database_sync_to_async(_conversation)(business, visitor)
    ws = await _socket(business, token, conversation.pk)
    await database_sync_to_async(conversation_close)(business=business, conversation_id=conversation.pk)
    assert (await ws.receive_json_from(timeout=5))["csat"] is True
    await ws.disconnect()
    assert (await _ready(business, token))["csat_conversation_id"] is None
