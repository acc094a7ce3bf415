"""The rating question on WhatsApp, Messenger and Instagram (``Agent.ask_channel_rating``): asked once, when
staff close a conversation, with reply buttons or quick replies that the Graph stand-in checks against Meta's
limits; the tap stores the CSAT score on that conversation only (that contact, that business), and the
analytics count it. Deliveries are processed in-process; the Graph API is the stand-in."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from agents.models import DRAFTED_FIELDS
from agents.selectors import agent_for
from agents.services import agent_update
from businesses.models import Business
from dashboard.analytics_selectors import analytics
from messaging.meta import intake, rating
from messaging.meta.tasks import process_delivery, send_message
from messaging.models import Conversation, Message
from messaging.services import conversation_close
from tests.factories import BusinessFactory, MembershipFactory
from tests.fixtures.meta import (
    connect,
    page_delivery,
    page_event,
    send_violation,
    signed,
    wa_change,
    wa_delivery,
    wa_text,
)

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_ID = "106540352242922"


def deliver(payload: Any, platform: str = "whatsapp") -> dict[str, Any] | None:
    body, header = signed(json.dumps(payload).encode())
    delivery_id = intake.webhook_delivery_store(platform=platform, body=body, signature=header)
    assert delivery_id is not None
    return process_delivery(delivery_id)


def button_tap(wamid: str, reply_id: str, title: str, sender: str = "16505551234") -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": reply_id, "title": title}},
    }


def _closed_with_question(business: Business) -> tuple[Conversation, Message]:
    conversation = Conversation.objects.get(business=business)
    conversation_close(business=business, conversation_id=conversation.pk)
    question = Message.objects.get(conversation=conversation, asks_rating=True)
    return conversation, question


def test_whatsapp_customers_get_reply_buttons_once_and_the_tap_scores_the_conversation(
    graph_api: Any,
) -> None:
    shop = BusinessFactory()
    connect(shop)
    agent_update(shop, ask_channel_rating=True)
    now = int(time.time())
    assert deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[wa_text("thanks", wamid="wamid.A", timestamp=now)]))
    )
    conversation, question = _closed_with_question(shop)
    assert (question.role, question.delivery, question.reply_to_id) == ("agent", "queued", None)
    # Closing again (or twice at once) asks nothing more.
    conversation_close(business=shop, conversation_id=conversation.pk)
    assert Message.objects.filter(asks_rating=True).count() == 1

    assert send_message(question.pk) == "sent"
    (send,) = graph_api.sends()
    interactive = send.body["interactive"]
    assert (send.body["type"], interactive["type"], interactive["body"]["text"]) == (
        "interactive",
        "button",
        question.text,
    )
    buttons = [(b["reply"]["id"], b["reply"]["title"]) for b in interactive["action"]["buttons"]]
    c = conversation.pk
    assert buttons == [(f"csat:{c}:5", "Good"), (f"csat:{c}:3", "OK"), (f"csat:{c}:1", "Bad")]
    assert graph_api.rejected == []

    # The tap scores the closed conversation and opens no new one; a second tap replaces the score.
    assert deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[button_tap("wamid.T1", f"csat:{c}:3", "OK")]))
    ) == {"rating": 1}
    assert deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[button_tap("wamid.T2", f"csat:{c}:5", "Good")]))
    ) == {"rating": 1}
    conversation.refresh_from_db()
    assert (conversation.csat_score, Conversation.objects.count()) == (5, 1)
    data = analytics(shop)
    assert (data.csat_answers, data.csat_average) == (1, 5.0)


def test_messenger_quick_replies_and_taps_for_someone_elses_conversation_are_refused(graph_api: Any) -> None:
    shop, other = BusinessFactory(), BusinessFactory()
    connect(shop, "messenger")
    agent_update(shop, ask_channel_rating=True)
    now_ms = int(time.time() * 1000)
    first = [page_event("PAGE_1", "PSID_1", mid="m_1", text="bye", timestamp=now_ms)]
    assert deliver(page_delivery("page", [("PAGE_1", first)]), platform="messenger") == {"received": 1}
    conversation, question = _closed_with_question(shop)
    assert send_message(question.pk) == "sent"
    (send,) = graph_api.sends()
    c = conversation.pk
    assert send.body["message"] == {
        "text": question.text,
        "quick_replies": [
            {"content_type": "text", "title": "Good", "payload": f"csat:{c}:5"},
            {"content_type": "text", "title": "OK", "payload": f"csat:{c}:3"},
            {"content_type": "text", "title": "Bad", "payload": f"csat:{c}:1"},
        ],
    }
    # Another business's conversation, closed, with a contact of the same id.
    connect(other, "messenger", page_id="PAGE_2")
    foreign = [page_event("PAGE_2", "PSID_1", mid="m_2", text="hi", timestamp=now_ms)]
    deliver(page_delivery("page", [("PAGE_2", foreign)]), platform="messenger")
    theirs = Conversation.objects.get(business=other)
    conversation_close(business=other, conversation_id=theirs.pk)

    def tap(sender: str, mid: str, payload: str) -> dict[str, Any] | None:
        event = page_event(
            "PAGE_1", sender, mid=mid, text="Good", timestamp=now_ms, quick_reply={"payload": payload}
        )
        return deliver(page_delivery("page", [("PAGE_1", [event])]), platform="messenger")

    assert tap("PSID_2", "m_t1", f"csat:{c}:5") == {"rating_refused": 1}  # not this contact's
    assert tap("PSID_1", "m_t2", f"csat:{theirs.pk}:1") == {"rating_refused": 1}  # not this business's
    assert tap("PSID_1", "m_t3", f"csat:{c}:9") == {"rating_refused": 1}  # not a score
    assert Conversation.objects.filter(csat_score__isnull=False).count() == 0
    assert tap("PSID_1", "m_t4", f"csat:{c}:1") == {"rating": 1}
    assert Conversation.objects.get(pk=c).csat_score == 1
    assert Conversation.objects.get(pk=theirs.pk).csat_score is None


def test_the_question_and_its_choices_are_in_the_customers_language(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    connect(shop, "messenger")
    agent_update(shop, ask_channel_rating=True)
    now = int(time.time())
    # WhatsApp, German: the customer's last message in the conversation sets the language.
    words = [
        wa_text("Do you have a tent for two?", wamid="wamid.D1", timestamp=now),
        wa_text("Danke, das war alles!", wamid="wamid.D2", timestamp=now),
    ]
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=words))) == {"received": 2}
    conversation, question = _closed_with_question(shop)
    assert question.text == "Wie zufrieden waren Sie mit uns? Bitte bewerten Sie dieses Gespräch."
    assert send_message(question.pk) == "sent"
    interactive = graph_api.sends()[-1].body["interactive"]
    c = conversation.pk
    assert interactive["body"]["text"] == question.text
    assert [(b["reply"]["id"], b["reply"]["title"]) for b in interactive["action"]["buttons"]] == [
        (f"csat:{c}:5", "Gut"),
        (f"csat:{c}:3", "Geht so"),
        (f"csat:{c}:1", "Schlecht"),
    ]
    # Messenger, Spanish: quick replies with the same payloads.
    event = page_event("PAGE_1", "PSID_1", mid="m_es", text="Gracias, eso es todo", timestamp=now * 1000)
    assert deliver(page_delivery("page", [("PAGE_1", [event])]), platform="messenger") == {"received": 1}
    conversation = Conversation.objects.get(business=shop, channel="messenger")
    conversation_close(business=shop, conversation_id=conversation.pk)
    question = Message.objects.get(conversation=conversation, asks_rating=True)
    assert send_message(question.pk) == "sent"
    c = conversation.pk
    assert graph_api.sends()[-1].body["message"] == {
        "text": "¿Qué tal te hemos atendido? Valora esta conversación, por favor.",
        "quick_replies": [
            {"content_type": "text", "title": "Bien", "payload": f"csat:{c}:5"},
            {"content_type": "text", "title": "Regular", "payload": f"csat:{c}:3"},
            {"content_type": "text", "title": "Mal", "payload": f"csat:{c}:1"},
        ],
    }
    # A tap scores the conversation as in English.
    tap = page_event(
        "PAGE_1",
        "PSID_1",
        mid="m_tap",
        text="Bien",
        timestamp=now * 1000,
        quick_reply={"payload": f"csat:{c}:5"},
    )
    assert deliver(page_delivery("page", [("PAGE_1", [tap])]), platform="messenger") == {"rating": 1}
    assert Conversation.objects.get(pk=c).csat_score == 5
    assert graph_api.rejected == []


def test_every_languages_choices_keep_metas_limits() -> None:
    for wording in rating.WORDINGS.values():
        for platform in ("whatsapp", "messenger", "instagram"):
            content = rating.rating_content(platform, 1, wording.question)
            if platform == "whatsapp":
                body = {"messaging_product": "whatsapp", **content}
                titles = [b["reply"]["title"] for b in content["interactive"]["action"]["buttons"]]
            else:
                body = {"recipient": {"id": "P"}, "message": content}
                titles = [r["title"] for r in content["quick_replies"]]
            assert send_violation(body) is None
            assert titles == list(wording.choices)


def test_without_the_setting_or_outside_the_window_nothing_is_asked(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("hi", wamid="wamid.B")])))
    conversation = Conversation.objects.get()
    conversation_close(business=shop, conversation_id=conversation.pk)
    assert not Message.objects.filter(asks_rating=True).exists()
    # On, but the customer wrote more than 24 hours ago (the fixture's timestamp): a survey never goes as a
    # template.
    agent_update(shop, ask_channel_rating=True)
    Conversation.objects.filter(pk=conversation.pk).update(state="bot")
    _, question = _closed_with_question(shop)
    assert send_message(question.pk) == "window closed: not sent"
    assert graph_api.sends() == []


def test_the_stand_in_refuses_quick_replies_over_metas_limits() -> None:
    def message(replies: list[dict[str, str]]) -> dict[str, Any]:
        return {"recipient": {"id": "P"}, "message": {"text": "Rate us", "quick_replies": replies}}

    reply = {"content_type": "text", "title": "Good", "payload": "csat:1:5"}
    assert send_violation(message([reply] * 13)) is None
    assert send_violation(message([reply] * 14)) == "1 to 13 quick replies"
    assert send_violation(message([reply | {"title": "x" * 21}])) is not None


def test_the_setting_is_a_checkbox_on_the_channels_page_and_is_not_drafted() -> None:
    assert "ask_channel_rating" not in DRAFTED_FIELDS
    owner = MembershipFactory(role="owner")
    other = BusinessFactory()
    client = Client()
    client.force_login(owner.user)
    slug = owner.business.slug
    assert 'name="ask_channel_rating"' in client.get(f"/app/{slug}/channels/").content.decode()
    assert client.post(f"/app/{slug}/channels/rating/", {"ask_channel_rating": "on"}).status_code == 302
    assert agent_for(owner.business).ask_channel_rating is True
    assert client.post(f"/app/{slug}/channels/rating/", {}).status_code == 302
    assert agent_for(owner.business).ask_channel_rating is False
    # Another business's page is not this owner's to change.
    assert client.post(f"/app/{other.slug}/channels/rating/", {"ask_channel_rating": "on"}).status_code == 404
    assert agent_for(other).ask_channel_rating is False
