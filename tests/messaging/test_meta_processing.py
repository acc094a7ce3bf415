"""Processing stored deliveries: routing, every message type, batches, BSUIDs, duplicates, statuses, echoes and
tenant isolation. Tasks run in-process (called directly); the Graph API is the loopback stand-in."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.utils import timezone

from agents.disclosure import DEFAULT_DISCLOSURES
from messaging.media_reading import media_read
from messaging.meta import intake, outbound
from messaging.meta.tasks import mark_read, process_delivery, send_message
from messaging.models import Contact, Conversation, Message, MessageMedia, OutboundPart, WebhookDelivery
from messaging.tasks import reply
from tests.factories import BusinessFactory
from tests.fixtures.meta import (
    connect,
    page_delivery,
    page_event,
    signed,
    wa_change,
    wa_delivery,
    wa_status,
    wa_text,
)

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_ID = "106540352242922"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


def now_ts() -> int:
    return int(timezone.now().timestamp())


def deliver(
    payload: Any, platform: str = "whatsapp", verified: list[int] | None = None, indent: int | None = None
) -> dict[str, Any] | None:
    """Store a delivery as the webhook view does and process it in-process, as the worker would. The same
    bytes again are a replay, not stored (None); ``indent`` gives the same events in other bytes."""
    body, header = signed(json.dumps(payload, indent=indent).encode() if indent else payload)
    delivery_id = intake.webhook_delivery_store(
        platform=platform, body=body, signature=header, verified_accounts=verified
    )
    return None if delivery_id is None else process_delivery(delivery_id)


@pytest.fixture
def shop() -> Any:
    business = BusinessFactory()
    connect(business)
    return business


def test_text_message_is_stored_under_the_business_of_the_phone_number(shop: Any) -> None:
    summary = deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[wa_text("Does it come in another color?", wamid=WAMID)]))
    )
    assert summary == {"received": 1}
    message = Message.objects.get()
    assert (message.business_id, message.channel, message.role, message.status) == (
        shop.pk,
        "whatsapp",
        "customer",
        "received",
    )
    assert message.text == "Does it come in another color?"
    assert message.channel_message_id == WAMID
    contact = Contact.objects.get()
    assert (contact.business_id, contact.external_id, contact.name) == (
        shop.pk,
        "16505551234",
        "Sheena Nelson",
    )
    conversation = Conversation.objects.get()
    assert conversation.last_customer_message_at == dt.datetime.fromtimestamp(1749416383, tz=dt.UTC)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.business_id, delivery.attempts) == ("done", shop.pk, 1)
    # Processing again is a no-op: the delivery is done.
    assert process_delivery(delivery.pk) is None
    assert Message.objects.count() == 1


IMAGE = {
    "from": "16505551234",
    "id": "wamid.IMG",
    "timestamp": "1744344496",
    "type": "image",
    "image": {
        "caption": "Do you have this in red?",
        "mime_type": "image/jpeg",
        "sha256": "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=",
        "id": "1003383421387256",
    },
}
LIST_REPLY = {
    "context": {"from": "15550783881", "id": "wamid.CTX"},
    "from": "16505551234",
    "id": "wamid.LIST",
    "timestamp": "1749854575",
    "type": "interactive",
    "interactive": {
        "type": "list_reply",
        "list_reply": {
            "id": "priority_express",
            "title": "Priority Mail Express",
            "description": "Next Day to 2 Days",
        },
    },
}
BUTTON_REPLY = {
    "context": {"from": "15550783881", "id": "wamid.CTX"},
    "from": "16505551234",
    "id": "wamid.BTN",
    "timestamp": "1750025136",
    "type": "interactive",
    "interactive": {"type": "button_reply", "button_reply": {"id": "cancel-button", "title": "Cancel"}},
}
TEMPLATE_BUTTON = {
    "from": "16505551234",
    "id": "wamid.TPL",
    "timestamp": "1750025136",
    "type": "button",
    "button": {"payload": "STOP_PROMOS", "text": "Stop promotions"},
}
LOCATION = {
    "from": "16505551234",
    "id": "wamid.LOC",
    "timestamp": "1744344496",
    "type": "location",
    "location": {
        "address": "101 Forest Ave, Palo Alto, CA 94301",
        "latitude": 37.44221496582,
        "longitude": -122.16165924072,
        "name": "Philz Coffee",
        "url": "https://philzcoffee.com/",
    },
}


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (LIST_REPLY, "Priority Mail Express - Next Day to 2 Days"),
        (BUTTON_REPLY, "Cancel"),
        (TEMPLATE_BUTTON, "Stop promotions"),
        (
            LOCATION,
            "My location: Philz Coffee, 101 Forest Ave, Palo Alto, CA 94301 (37.44221496582, -122.16165924072)",
        ),
    ],
)
def test_supported_types_reach_the_agent_as_text(shop: Any, message: dict[str, Any], text: str) -> None:
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[message]))) == {"received": 1}
    stored = Message.objects.get()
    assert (stored.text, stored.status, stored.channel_message_id) == (text, "received", message["id"])


@pytest.mark.parametrize(
    ("message", "stored_text", "note"),
    [
        (
            {
                "from": "16505551234",
                "id": "wamid.VID",
                "timestamp": "1744344496",
                "type": "video",
                "video": {"id": "1"},
            },
            "[video]",
            "Sorry, I can't open videos here. I can read text messages, button and list choices, "
            "shared locations, photos and voice messages: please type your question.",
        ),
        (
            {
                "from": "16505551234",
                "id": "wamid.NEW",
                "timestamp": "1744344496",
                "type": "hologram",
                "hologram": {},
            },
            "[hologram]",
            "Sorry, I can't open this kind of message here. I can read text messages, button and list choices, "
            "shared locations, photos and voice messages: please type your question.",
        ),
    ],
)
def test_unsupported_types_get_a_polite_note_and_never_crash(
    shop: Any, graph_api: Any, message: dict[str, Any], stored_text: str, note: str
) -> None:
    message = {**message, "timestamp": str(now_ts())}
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[message]))) == {"unsupported": 1}
    customer = Message.objects.get(role="customer")
    agent = Message.objects.get(role="agent")
    assert (customer.text, customer.status) == (stored_text, "answered")
    assert (agent.text, agent.delivery, agent.reply_to_id) == (note, "queued", customer.pk)
    # The conversation's first reply: the AI disclosure goes first (messaging.disclosure).
    assert agent.disclosure == DEFAULT_DISCLOSURES["en"]
    assert send_message(agent.pk) == "sent"
    assert [r.body for r in graph_api.requests] == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "16505551234",
            "type": "text",
            "text": {"preview_url": False, "body": body},
        }
        for body in (agent.disclosure, note)
    ]
    # Redelivered: nothing new stored, nothing sent again.
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[message])), indent=1) == {"duplicate": 1}
    assert Message.objects.count() == 2


def test_the_note_for_an_unsupported_type_is_in_the_customers_language() -> None:
    # The intake passes the customer's words (``language_hint``); without any, English.
    assert outbound.unsupported_reply("audio", "Habt ihr das Zelt auch in Grün?") == (
        "Leider kann ich Sprachnachrichten hier nicht öffnen. Ich kann Textnachrichten, die Auswahl aus "
        "Buttons und Listen, geteilte Standorte, Fotos und Sprachnachrichten lesen: Bitte schreiben Sie Ihre "
        "Frage."
    )
    assert outbound.unsupported_reply("hologram", "Bonjour, vous avez des tentes ?") == (
        "Désolé, je ne peux pas ouvrir ce type de message ici. Je peux lire les messages texte, les choix dans "
        "les boutons et les listes, les positions partagées, les photos et les messages vocaux : merci d'écrire "
        "votre question."
    )
    assert (
        outbound.unsupported_reply("video")
        == outbound.unsupported_reply("video", "ok")
        == (
            "Sorry, I can't open videos here. I can read text messages, button and list choices, shared locations, "
            "photos and voice messages: please type your question."
        )
    )
    # Every kind has its name in every language.
    for names in outbound.UNSUPPORTED_NAMES.values():
        assert set(names) == {*outbound.UNSUPPORTED_KINDS.values(), ""}


def test_reactions_are_ignored(shop: Any) -> None:
    reaction = {
        "from": "16505551234",
        "id": "wamid.R",
        "timestamp": "1744344496",
        "type": "reaction",
        "reaction": {"message_id": "wamid.X", "emoji": "👍"},
    }
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[reaction]))) == {"ignored": 1}
    assert Message.objects.count() == 0


def test_batch_of_entries_changes_and_messages_is_processed_in_full() -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    connect(shop_a, phone_number_id="111")
    connect(shop_b, phone_number_id="222", waba_id="WABA_B")
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba,
                "changes": [
                    wa_change(
                        phone,
                        messages=[
                            wa_text(
                                f"{phone}-{c}-{m}",
                                wamid=f"wamid.{phone}.{c}.{m}",
                                sender=f"1650555{c}{m}00",
                                timestamp=1749416383 + c * 10 + m,
                            )
                            for m in range(2)
                        ],
                    )
                    for c in range(2)
                ],
            }
            for waba, phone in (("102290129340398", "111"), ("WABA_B", "222"))
        ],
    }
    assert deliver(payload) == {"received": 8}
    for business, phone in ((shop_a, "111"), (shop_b, "222")):
        texts = list(Message.objects.filter(business=business).order_by("pk").values_list("text", flat=True))
        assert texts == [f"{phone}-0-0", f"{phone}-0-1", f"{phone}-1-0", f"{phone}-1-1"]
        assert Contact.objects.filter(business=business).count() == 4


def test_business_scoped_user_ids_work_without_from_or_wa_id(shop: Any, graph_api: Any) -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
                            "contacts": [
                                {
                                    "profile": {"name": "Sheena Nelson", "username": "realsheenanelson"},
                                    "user_id": "US.13491208655302741918",
                                    "parent_user_id": "US.ENT.11815799212886844830",
                                }
                            ],
                            "messages": [
                                {
                                    "from_user_id": "US.13491208655302741918",
                                    "from_parent_user_id": "US.ENT.11815799212886844830",
                                    "id": WAMID,
                                    "timestamp": "1749416383",
                                    "type": "text",
                                    "text": {"body": "Does it come in another color?"},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    assert deliver(payload) == {"received": 1}
    contact = Contact.objects.get()
    assert (contact.external_id, contact.name) == ("US.13491208655302741918", "Sheena Nelson")
    # A reply to a BSUID goes to `recipient`, not `to`.
    conversation = Conversation.objects.get()
    conversation.last_customer_message_at = timezone.now()
    conversation.save(update_fields=["last_customer_message_at"])
    answer = Message.objects.create(
        business=shop,
        conversation=conversation,
        channel="whatsapp",
        role="staff",
        text="Yes, in blue.",
        status="done",
    )
    assert send_message(answer.pk) == "sent"
    assert graph_api.requests[-1].body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "recipient": "US.13491208655302741918",
        "type": "text",
        "text": {"preview_url": False, "body": "Yes, in blue."},
    }


def test_duplicates_twice_and_hours_apart_store_one_message_and_get_one_reply(
    shop: Any, graph_api: Any
) -> None:
    payload = wa_delivery(wa_change(PHONE_ID, messages=[wa_text("Hello?", wamid=WAMID, timestamp=now_ts())]))
    assert deliver(payload) == {"received": 1}
    assert deliver(payload) is None  # the same bytes: a replay, not even stored
    assert deliver(payload, indent=1) == {"duplicate": 1}
    customer = Message.objects.get()
    # The agent answers (no catalog: the business's fallback, no model call) and the answer is sent.
    assert reply(customer.pk) == "done"
    answer = Message.objects.get(role="agent")
    assert send_message(answer.pk) == "sent"
    # Meta retries for days: the same wamid hours later changes nothing and sends nothing.
    Message.objects.filter(pk=customer.pk).update(created_at=timezone.now() - dt.timedelta(hours=30))
    assert deliver(payload, indent=2) == {"duplicate": 1}
    assert reply(customer.pk) == "answered"
    assert send_message(answer.pk) == "skipped"
    assert Message.objects.filter(role="customer").count() == 1
    assert Message.objects.filter(role="agent").count() == 1
    # The answer, after the AI disclosure of the conversation's first reply.
    assert [send.body["text"]["body"] for send in graph_api.sends()] == [answer.disclosure, answer.text]


def _sent_message(shop: Any, graph_api: Any, text: str = "Here you go.") -> Message:
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("hi", wamid=WAMID)])))
    conversation = Conversation.objects.get()
    Conversation.objects.filter(pk=conversation.pk).update(last_customer_message_at=timezone.now())
    message = Message.objects.create(
        business=shop,
        conversation=conversation,
        channel="whatsapp",
        role="staff",
        text=text,
        status="done",
        delivery="queued",
    )
    assert send_message(message.pk) == "sent"
    message.refresh_from_db()
    return message


def test_statuses_out_of_order_only_move_forward(shop: Any, graph_api: Any) -> None:
    message = _sent_message(shop, graph_api)
    wamid = message.channel_message_id
    assert wamid == "wamid.out.1"
    assert message.delivery == "sent"
    # read arrives first (and `delivered` may never come), then the late ones.
    assert deliver(wa_delivery(wa_change(PHONE_ID, statuses=[wa_status(wamid, "read")]))) == {
        "status_read": 1
    }
    assert deliver(
        wa_delivery(wa_change(PHONE_ID, statuses=[wa_status(wamid, "delivered"), wa_status(wamid, "sent")]))
    ) == {"status_stale": 2}
    message.refresh_from_db()
    assert message.delivery == "read"


def test_failed_status_is_final_and_recorded(shop: Any, graph_api: Any) -> None:
    message = _sent_message(shop, graph_api)
    wamid = message.channel_message_id
    failed = wa_status(
        wamid,
        "failed",
        errors=[
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed."},
            }
        ],
    )
    assert deliver(wa_delivery(wa_change(PHONE_ID, statuses=[wa_status(wamid, "delivered"), failed]))) == {
        "status_delivered": 1,
        "status_failed": 1,
    }
    deliver(wa_delivery(wa_change(PHONE_ID, statuses=[wa_status(wamid, "read")])))
    message.refresh_from_db()
    assert (message.delivery, message.error) == ("failed", "window closed (131047): Re-engagement message")


def test_statuses_for_unknown_ids_are_ignored(shop: Any) -> None:
    assert deliver(wa_delivery(wa_change(PHONE_ID, statuses=[wa_status("wamid.not-ours", "read")]))) == {
        "status_unmatched": 1
    }


def test_messenger_and_instagram_batches_with_echoes_dropped() -> None:
    shop = BusinessFactory()
    connect(shop, "messenger", page_id="PAGE_1")
    connect(shop, "messenger", page_id="PAGE_2")
    connect(shop, "instagram", instagram_account_id="IG_1")
    messenger = page_delivery(
        "page",
        [
            (
                "PAGE_1",
                [
                    page_event(
                        "PAGE_1", "PSID_1", mid="mid.1", text="hello, world!", timestamp=1458692752478
                    ),
                    page_event("PAGE_1", "PSID_1", mid="mid.2", text="echo of ours", is_echo=True, app_id=1),
                    page_event(
                        "PAGE_1", "PSID_2", mid="mid.3", text="any mugs?", quick_reply={"payload": "MUGS"}
                    ),
                ],
            ),
            ("PAGE_2", [page_event("PAGE_2", "PSID_9", mid="mid.4", text="open today?")]),
        ],
    )
    assert deliver(messenger, platform="messenger") == {"received": 3, "ignored": 1}
    instagram = page_delivery(
        "instagram",
        [
            (
                "IG_1",
                [
                    page_event("IG_1", "IGSID_1", mid="ig.1", text="price?"),
                    # Instagram has no separate echo field: our own send comes back with sender = us.
                    page_event("IG_1", "IG_1", mid="ig.2", text="It is 12 EUR."),
                    page_event("IG_1", "IGSID_1", mid="ig.3", text="thanks", is_echo=True),
                ],
            )
        ],
    )
    assert deliver(instagram, platform="instagram") == {"received": 1, "ignored": 2}
    texts = dict(Message.objects.values_list("channel_message_id", "text"))
    assert texts == {"mid.1": "hello, world!", "mid.3": "any mugs?", "mid.4": "open today?", "ig.1": "price?"}
    # Milliseconds, not seconds.
    conversation = Conversation.objects.get(contact__external_id="PSID_1")
    assert conversation.last_customer_message_at == dt.datetime(2016, 3, 23, 0, 25, 52, 478000, tzinfo=dt.UTC)
    assert set(Message.objects.values_list("channel", flat=True)) == {"messenger", "instagram"}


def test_messenger_delivery_and_read_watermark_update_sent_messages(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop, "messenger", page_id="PAGE_1")
    deliver(
        page_delivery("page", [("PAGE_1", [page_event("PAGE_1", "PSID_1", mid="mid.1", text="hi")])]),
        "messenger",
    )
    conversation = Conversation.objects.get()
    Conversation.objects.filter(pk=conversation.pk).update(last_customer_message_at=timezone.now())
    message = Message.objects.create(
        business=shop,
        conversation=conversation,
        channel="messenger",
        role="staff",
        text="Hello!",
        status="done",
    )
    assert send_message(message.pk) == "sent"
    assert graph_api.sends()[-1].path == "/v23.0/PAGE_1/messages"
    assert graph_api.sends()[-1].body == {
        "recipient": {"id": "PSID_1"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hello!"},
    }
    mid = OutboundPart.objects.get().channel_message_id
    future = int((timezone.now() + dt.timedelta(seconds=5)).timestamp() * 1000)
    deliver(
        page_delivery(
            "page",
            [("PAGE_1", [page_event("PAGE_1", "PSID_1", delivery={"mids": [mid], "watermark": future})])],
        ),
        "messenger",
    )
    message.refresh_from_db()
    assert message.delivery == "delivered"
    deliver(
        page_delivery("page", [("PAGE_1", [page_event("PAGE_1", "PSID_1", read={"watermark": future})])]),
        "messenger",
    )
    message.refresh_from_db()
    assert message.delivery == "read"


def test_mark_read_and_typing_indicator(shop: Any, graph_api: Any) -> None:
    account = shop.channel_accounts.get()
    assert mark_read(account.pk, "16505551234", WAMID) is True
    assert graph_api.requests[-1].path == f"/v23.0/{PHONE_ID}/messages"
    assert graph_api.requests[-1].headers["Authorization"] == f"Bearer EAAG-token-for-{shop.slug}-0123456789"
    assert graph_api.requests[-1].body == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": WAMID,
        "typing_indicator": {"type": "text"},
    }


def test_unrouted_and_malformed_deliveries_create_nothing(shop: Any) -> None:
    assert deliver(wa_delivery(wa_change("999999", messages=[wa_text("hi", wamid="wamid.X")]))) == {
        "unrouted": 1
    }
    assert deliver({"object": "whatsapp_business_account", "entry": "not-a-list"}) == {}
    assert deliver({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": None}]}]}) == {}
    assert deliver(b"not json") == {"not_json": 1}
    assert deliver([1, 2, 3]) == {}
    assert Message.objects.count() == 0
    assert Contact.objects.count() == 0
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"done"}


def test_tenant_isolation_a_delivery_for_a_never_touches_b() -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    account_a = connect(shop_a, phone_number_id="111", waba_id="WABA_A")
    account_b = connect(shop_b, phone_number_id="222", waba_id="WABA_B", app_secret="secret-of-shop-b")
    # The same customer writes to both numbers: two separate contacts, conversations, messages.
    deliver(wa_delivery(wa_change("111", messages=[wa_text("to A", wamid="wamid.A1")]), waba_id="WABA_A"))
    assert Message.objects.filter(business=shop_a).count() == 1
    assert Contact.objects.filter(business=shop_b).count() == 0
    assert Conversation.objects.filter(business=shop_b).count() == 0
    # Signed with B's own secret but naming A's number: routed nowhere.
    assert deliver(
        wa_delivery(wa_change("111", messages=[wa_text("forged", wamid="wamid.A2")]), waba_id="WABA_A"),
        verified=[account_b.pk],
    ) == {"unrouted": 1}
    # A's statuses cannot touch B's messages even with B's ids in them.
    assert Message.objects.filter(business=shop_b).count() == 0
    assert Message.objects.filter(business=shop_a).count() == 1
    assert account_a.pk != account_b.pk


def test_human_state_stores_but_the_agent_stays_silent(shop: Any, graph_api: Any) -> None:
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("hi", wamid="wamid.1")])))
    Conversation.objects.update(state="human")
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("still there?", wamid="wamid.2")])))
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[{**IMAGE, "id": "wamid.3", "image": {"id": "1"}}])))
    # A photo is read first (staff see what it shows), then left to staff too.
    assert media_read(media_id=MessageMedia.objects.get().pk) == "refused"  # Graph has no media "1"
    assert list(Message.objects.order_by("pk").values_list("role", "status")) == [
        ("customer", "received"),
        ("customer", "skipped"),
        ("customer", "skipped"),
    ]


def test_processing_is_scheduled_once_for_a_burst_of_deliveries(shop: Any, redis_client: Any) -> None:
    from celery.signals import before_task_publish

    from messaging.meta.tasks import process_pending

    published: list[str] = []

    def count(sender: str | None = None, routing_key: str | None = None, **_: Any) -> None:
        published.append(f"{sender}@{routing_key}")

    before_task_publish.connect(count, weak=False)
    try:
        for n in range(3):
            body, header = signed(
                wa_delivery(wa_change(PHONE_ID, messages=[wa_text(f"m{n}", wamid=f"wamid.{n}")]))
            )
            intake.webhook_delivery_store(platform="whatsapp", body=body, signature=header)
        # One task queued on the replies queue for the three deliveries.
        assert published == ["messaging.meta.tasks.process_pending@replies"]
        assert redis_client.exists(intake.SCHEDULE_FLAG) == 1
        assert process_pending() == 3
        assert redis_client.exists(intake.SCHEDULE_FLAG) == 0
        assert list(Message.objects.order_by("pk").values_list("text", flat=True)) == ["m0", "m1", "m2"]
        # The next delivery after a run schedules a new run.
        published.clear()
        body, header = signed(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("m3", wamid="wamid.3")])))
        intake.webhook_delivery_store(platform="whatsapp", body=body, signature=header)
        assert [p for p in published if "process_pending" in p] == [
            "messaging.meta.tasks.process_pending@replies"
        ]
        assert process_pending() == 1
        assert process_pending() == 0
    finally:
        before_task_publish.disconnect(count)


def test_sweeper_requeues_old_pending_and_failed_deliveries(shop: Any) -> None:
    from celery.signals import before_task_publish

    from messaging.meta.tasks import sweep_deliveries

    ids = []
    for n in range(3):
        body, header = signed(
            wa_delivery(wa_change(PHONE_ID, messages=[wa_text(f"s{n}", wamid=f"wamid.s{n}")]))
        )
        ids.append(intake.webhook_delivery_store(platform="whatsapp", body=body, signature=header))
    old = timezone.now() - dt.timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=ids[0]).update(received_at=old)
    WebhookDelivery.objects.filter(pk=ids[1]).update(
        received_at=old, state="failed", error="OperationalError"
    )
    # ids[2] is recent: its scheduled run will take it.
    published: list[Any] = []

    def count(sender: str | None = None, body: Any = None, **_: Any) -> None:
        published.append((sender, body[0] if isinstance(body, tuple) else body))

    before_task_publish.connect(count, weak=False)
    try:
        assert sweep_deliveries() == 2
    finally:
        before_task_publish.disconnect(count)
    assert sorted(published) == [
        ("messaging.meta.tasks.process_delivery", (ids[0],)),
        ("messaging.meta.tasks.process_delivery", (ids[1],)),
    ]
    assert process_delivery(ids[1]) == {"received": 1}
    assert WebhookDelivery.objects.get(pk=ids[1]).state == "done"


def test_the_intake_answers_an_unsupported_type_in_the_customers_language(shop: Any, graph_api: Any) -> None:
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("Habt ihr Zelte?", wamid="wamid.1")])))
    sticker = {"from": "16505551234", "id": "wamid.S", "timestamp": str(now_ts()), "type": "sticker"}
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[sticker]))) == {"unsupported": 1}
    note = Message.objects.get(role="agent")
    assert note.text == outbound.unsupported_reply("sticker", "Habt ihr Zelte?")
    assert note.text.startswith("Leider kann ich Sticker hier nicht öffnen.")
    assert note.disclosure == DEFAULT_DISCLOSURES["de"]  # the note follows the customer's words, so does this
