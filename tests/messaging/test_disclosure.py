"""The AI disclosure on every channel (messaging.disclosure): which replies carry it (the first of a conversation,
the first after a long gap, the first after staff hand back), in the customer's language or the business's own
words, stored on the reply, sent before the answer on WhatsApp, Messenger and Instagram and in the widget's
payload; asking for a person keeps working. Replies run in this process; the Graph API is the stand-in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from agents.disclosure import DEFAULT_DISCLOSURES
from agents.selectors import agent_for
from agents.services import agent_update
from messaging.meta.tasks import send_message
from messaging.models import Conversation, Message
from messaging.replies.engine import run_reply
from messaging.selectors import conversation_history, message_payload
from messaging.services import (
    conversation_hand_back,
    conversation_handoff,
    message_receive,
    staff_reply_send,
)
from tests.factories import BusinessFactory
from tests.fixtures.meta import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop() -> Any:
    """A business without a catalog: its agent answers with its fallback, no model call; it never hands over
    for finding nothing (those fallbacks would count as failures in a row)."""
    business = BusinessFactory()
    agent_update(business, handoff_after_failures=0)
    return business


def ask(business: Any, text: str, *, outcome: str = "done", **kwargs: Any) -> Message:
    """The customer writes ``text``; the agent's reply (run here, as the task would)."""
    kwargs.setdefault("channel", "whatsapp")
    kwargs.setdefault("contact_external_id", "4915550001")
    message = message_receive(business=business, text=text, **kwargs)
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == outcome
    return Message.objects.get(reply_to=message)


def test_the_first_reply_after_a_long_gap_and_after_a_hand_back_say_it_is_an_assistant(shop: Any) -> None:
    first = ask(shop, "Do you sell tents?")
    assert first.disclosure == DEFAULT_DISCLOSURES["en"]
    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert conversation.disclosed_at is not None
    # Said once: the next reply of the same stretch goes without.
    assert ask(shop, "And sleeping bags?").disclosure == ""
    # Just under the gap (24 hours by default): still without.
    Message.objects.filter(conversation=conversation).update(
        created_at=timezone.now() - dt.timedelta(hours=23)
    )
    assert ask(shop, "And stoves?").disclosure == ""
    # A longer gap: said again, in the customer's language.
    Message.objects.filter(conversation=conversation).update(
        created_at=timezone.now() - dt.timedelta(hours=25)
    )
    assert ask(shop, "Was kostet das Zelt?").disclosure == DEFAULT_DISCLOSURES["de"]
    assert ask(shop, "Und der Kocher?").disclosure == ""
    # Staff take over and hand back: the agent's next reply says it again.
    conversation_handoff(business=shop, conversation_id=conversation.pk, reason="staff took over")
    staff = staff_reply_send(business=shop, conversation_id=conversation.pk, user=None, text="Hi, Sam here.")
    assert staff is not None and staff.disclosure == ""
    conversation_hand_back(business=shop, conversation_id=conversation.pk)
    assert Conversation.objects.get(pk=conversation.pk).disclosed_at is None
    assert ask(shop, "Do you have stoves?").disclosure == DEFAULT_DISCLOSURES["en"]
    # The disclosure is kept beside the answer, never in it.
    assert not any(
        DEFAULT_DISCLOSURES["en"] in text
        for text in Message.objects.filter(conversation=conversation).values_list("text", flat=True)
    )


def test_the_gap_is_a_setting(settings: Any, shop: Any) -> None:
    settings.AI_DISCLOSURE_GAP_HOURS = 1
    first = ask(shop, "Do you sell tents?")
    Message.objects.filter(conversation_id=first.conversation_id).update(
        created_at=timezone.now() - dt.timedelta(hours=2)
    )
    assert ask(shop, "And stoves?").disclosure == DEFAULT_DISCLOSURES["en"]


def test_the_business_words_per_language_and_asking_for_a_person_still_works(shop: Any) -> None:
    own = "Te atiende un asistente automático. Para hablar con una persona, escríbelo."
    agent_update(shop, disclosure_texts={"es": own})
    first = ask(shop, "¿Cuánto cuesta la tienda?")
    assert first.disclosure == own
    # The customer takes the way out the disclosure names: a person takes over, and that reply adds nothing.
    handoff = ask(shop, "Quiero hablar con una persona", outcome="handoff")
    assert (handoff.text, handoff.disclosure) == (agent_for(shop).handoff_message, "")
    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert conversation.state == "human"
    # Another business's conversation is told in the defaults: the words are per business.
    other = ask(BusinessFactory(), "¿Cuánto cuesta la tienda?")
    assert other.disclosure == DEFAULT_DISCLOSURES["es"]


@pytest.mark.parametrize(
    ("kind", "sender", "expected"),
    [
        ("whatsapp", "4915550001", "whatsapp"),
        ("messenger", "PSID_1", "messenger"),
        ("instagram", "IGSID_1", "instagram"),
    ],
)
def test_messaging_channels_get_the_disclosure_as_a_message_before_the_answer(
    graph_api: Any, shop: Any, kind: str, sender: str, expected: str
) -> None:
    connect(shop, kind)
    reply = ask(shop, "Do you sell tents?", channel=kind, contact_external_id=sender)
    assert reply.disclosure == DEFAULT_DISCLOSURES["en"] and reply.delivery == "queued"
    assert send_message(reply.pk) == "sent"
    sent = [r.body for r in graph_api.sends()]
    if expected == "whatsapp":
        assert [body["text"]["body"] for body in sent] == [reply.disclosure, reply.text]
    else:
        assert [body["message"] for body in sent] == [{"text": reply.disclosure}, {"text": reply.text}]
    # The next reply goes without.
    second = ask(shop, "And stoves?", channel=kind, contact_external_id=sender)
    assert send_message(second.pk) == "sent"
    assert len(graph_api.sends()) == 3


def test_the_widget_gets_the_disclosure_with_the_reply_and_in_its_history(shop: Any) -> None:
    reply = ask(shop, "Do you sell tents?", channel="widget", contact_external_id="visitor-1")
    assert message_payload(reply)["disclosure"] == DEFAULT_DISCLOSURES["en"]
    history = conversation_history(shop, reply.conversation_id, "visitor-1")
    assert [message_payload(m).get("disclosure") for m in history] == [None, DEFAULT_DISCLOSURES["en"]]
    second = ask(shop, "And stoves?", channel="widget", contact_external_id="visitor-1")
    assert "disclosure" not in message_payload(second)
