"""Products as native messages (messaging.meta.products): WhatsApp product / product_list messages with a
connected commerce catalog, a list or a cta_url message without one; a carousel on Messenger and Instagram.
The Graph API stand-in checks every payload against Meta's documented limits (tests/fixtures/meta.py,
``send_violation``) and refuses violations, so each send here proves its payload keeps them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from agents.cards import Card
from messaging.meta import outbound, products, sending
from messaging.meta.accounts import channel_account_set_catalog
from messaging.models import ChannelAccount, Contact, Conversation, Message, OutboundPart
from messaging.replies.engine import run_reply
from messaging.services import message_receive
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.meta import connect, send_violation

LONG_TITLE = "Ridgeline ultralight freestanding three-season backpacking tent for two people, green"


def card(n: int, **changes: Any) -> Card:
    value: Card = {
        "item_id": n,
        "external_id": f"SKU-{n}",
        "title": f"{LONG_TITLE} {n}",
        "price": "249.00",
        "sale_price": None,
        "currency": "EUR",
        "availability": "in_stock",
        "image_url": f"https://shop.example/img/{n}.jpg",
        "url": f"https://shop.example/p/{n}",
    }
    value.update(changes)  # type: ignore[typeddict-item]
    return value


TEXT = "We have these tents. " + "Each one is sturdy and light, and it packs small. " * 20


def test_whatsapp_with_a_catalog_gets_product_and_product_list_messages_within_the_limits() -> None:
    (single,) = outbound.message_parts("whatsapp", "The tent is 249.00 EUR.", [card(1)], catalog_id="777")
    assert single == {
        "type": "interactive",
        "interactive": {
            "type": "product",
            "action": {"catalog_id": "777", "product_retailer_id": "SKU-1"},
            "body": {"text": "The tent is 249.00 EUR."},
        },
    }
    (many,) = outbound.message_parts("whatsapp", TEXT, [card(n) for n in range(1, 36)], catalog_id="777")
    interactive = many["interactive"]
    assert interactive["type"] == "product_list"
    # The answer's text rides in the body, short: its first sentences.
    assert interactive["body"]["text"] == outbound.short_text(TEXT)
    assert len(interactive["body"]["text"]) <= outbound.SHORT_TEXT_CHARS
    assert interactive["header"]["text"] == "Ridgeline ultralight freestanding three-season backpacking…"
    (section,) = interactive["action"]["sections"]
    assert [i["product_retailer_id"] for i in section["product_items"]] == [f"SKU-{n}" for n in range(1, 31)]
    assert send_violation({"messaging_product": "whatsapp", **many}) is None
    # A card without a SKU has no retailer id: not listed; none at all: the messages without a catalog.
    parts = outbound.message_parts("whatsapp", "Here.", [card(1, external_id="")], catalog_id="777")
    assert [p["interactive"]["type"] for p in parts if p["type"] == "interactive"] == ["cta_url"]


def test_whatsapp_without_a_catalog_gets_a_list_of_at_most_ten_rows() -> None:
    (message,) = outbound.message_parts("whatsapp", TEXT, [card(n) for n in range(1, 13)])
    interactive = message["interactive"]
    assert interactive["type"] == "list"
    assert interactive["body"] == {"text": outbound.short_text(TEXT)}
    (section,) = interactive["action"]["sections"]
    rows = section["rows"]
    assert len(rows) == 10
    assert rows[0] == {
        "id": "item:1",
        "title": "Ridgeline ultralight fr…",
        "description": "249.00 EUR · in stock",
    }
    assert all(len(row["title"]) <= 24 for row in rows)
    assert send_violation({"messaging_product": "whatsapp", **message}) is None


def test_messenger_and_instagram_get_a_carousel_of_at_most_ten() -> None:
    for platform in ("messenger", "instagram"):
        text, template = outbound.message_parts(
            platform, TEXT, [card(n, sale_price="199.00") for n in range(12)]
        )
        assert text == {"text": outbound.short_text(TEXT)}
        elements = template["attachment"]["payload"]["elements"]
        assert len(elements) == 10
        assert len(elements[0]["title"]) == 80 and elements[0]["title"].endswith("…")
        assert elements[0]["subtitle"] == "199.00 EUR · in stock"
        assert elements[0]["buttons"] == [
            {"type": "web_url", "url": "https://shop.example/p/0", "title": "View"},
            {"type": "postback", "title": "Details", "payload": "item:0"},
        ]
        assert send_violation({"recipient": {"id": "1"}, "message": template}) is None


def test_every_languages_button_words_keep_metas_limits() -> None:
    for words in products.LABELS.values():
        whatsapp = [
            *products.whatsapp_products([card(n) for n in range(1, 4)], "Here.", "", words),  # a list
            *products.whatsapp_products([card(1)], "Here.", "", words),  # cta_url
        ]
        assert [m["interactive"]["type"] for m in whatsapp] == ["list", "cta_url"]
        for message in whatsapp:
            assert send_violation({"messaging_product": "whatsapp", **message}) is None
        template = products.generic_template([card(1)], words)
        assert template is not None
        assert send_violation({"recipient": {"id": "1"}, "message": template}) is None


def test_the_stand_in_refuses_what_meta_would() -> None:
    wa = {"messaging_product": "whatsapp", "type": "interactive"}
    rows = [{"id": f"r{n}", "title": "A row"} for n in range(11)]
    too_many = {
        "type": "list",
        "body": {"text": "b"},
        "action": {"button": "Products", "sections": [{"rows": rows}]},
    }
    assert (
        send_violation({**wa, "interactive": too_many})
        == "a list has 1 to 10 sections and 1 to 10 rows in all"
    )
    long_button = {
        "type": "cta_url",
        "body": {"text": "b"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": "View this product now", "url": "https://x"},
        },
    }
    assert send_violation({**wa, "interactive": long_button}) == "cta_url display_text over 20 characters"
    items = [{"product_retailer_id": str(n)} for n in range(31)]
    product_list = {
        "type": "product_list",
        "header": {"type": "text", "text": "Tents"},
        "body": {"text": "b"},
        "action": {"catalog_id": "1", "sections": [{"product_items": items}]},
    }
    assert send_violation({**wa, "interactive": product_list}) == "a product_list has 1 to 30 products in all"
    elements = [{"title": "x" * 81}]
    generic = {
        "attachment": {"type": "template", "payload": {"template_type": "generic", "elements": elements}}
    }
    assert (
        send_violation({"recipient": {"id": "1"}, "message": generic})
        == "element title of 1 to 80 characters"
    )


@pytest.mark.django_db(transaction=True)
def test_a_payload_over_the_limits_is_refused_by_the_stand_in_and_the_message_fails(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    contact = Contact.objects.create(business=shop, channel="whatsapp", external_id="16505551234")
    conversation = Conversation.objects.create(
        business=shop, contact=contact, channel="whatsapp", last_customer_message_at=timezone.now()
    )
    message = Message.objects.create(
        business=shop,
        conversation=conversation,
        channel="whatsapp",
        role="staff",
        text="Too long",
        status="done",
        delivery="queued",
    )
    # A planned part past the limit (our splitting never writes one): the stand-in refuses it, as Meta would.
    OutboundPart.objects.create(
        business=shop,
        message=message,
        index=0,
        channel="whatsapp",
        body={
            **outbound.request_body("whatsapp", "16505551234", {"type": "text", "text": {"body": "x" * 4097}})
        },
    )
    assert sending.message_send(message_id=message.pk) == "failed"
    assert graph_api.rejected == ["text body over 4096 characters"]
    message.refresh_from_db()
    assert (message.delivery, message.error) == (
        "failed",
        "100: (#100) Invalid parameter: text body over 4096 characters",
    )


@pytest.fixture
def tents(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def _reply(business: Any, channel: str, sender: str, text: str) -> Message:
    message = message_receive(business=business, channel=channel, contact_external_id=sender, text=text)
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    return Message.objects.get(reply_to=message)


@pytest.mark.django_db(transaction=True)
def test_a_reply_citing_items_goes_out_as_product_messages_on_each_channel(
    graph_api: Any, tents: Any
) -> None:
    whatsapp = connect(tents)
    assert channel_account_set_catalog(business=tents, account_id=whatsapp.pk, catalog_id="4410001")
    connect(tents, "messenger")
    reply = _reply(tents, "whatsapp", "4915550001", "How much is the Ridgeline 2-person tent?")
    assert [c["external_id"] for c in reply.cards] == ["TENT-2P"]
    assert sending.message_send(message_id=reply.pk) == "sent"
    disclosure, product = (r.body for r in graph_api.sends())
    assert disclosure["text"]["body"] == reply.disclosure
    assert product["interactive"] == {
        "type": "product",
        "action": {"catalog_id": "4410001", "product_retailer_id": "TENT-2P"},
        "body": {"text": outbound.short_text(reply.text)},
    }
    reply = _reply(tents, "messenger", "PSID_1", "How much is the Ridgeline 2-person tent?")
    assert sending.message_send(message_id=reply.pk) == "sent"
    carousel = graph_api.sends()[-1].body["message"]["attachment"]["payload"]
    assert [(e["title"], e["subtitle"]) for e in carousel["elements"]] == [
        ("Ridgeline 2-person tent", "249.00 EUR · in stock")
    ]
    assert graph_api.rejected == []


@pytest.mark.django_db(transaction=True)
def test_the_buttons_speak_the_language_of_the_question(graph_api: Any, tents: Any) -> None:
    connect(tents)  # no commerce catalog: a cta_url message with a link button
    connect(tents, "messenger")
    reply = _reply(tents, "whatsapp", "4915550001", "Wie viel kostet das Ridgeline 2-person tent?")
    assert [c["external_id"] for c in reply.cards] == ["TENT-2P"]
    assert sending.message_send(message_id=reply.pk) == "sent"
    link = graph_api.sends()[-1].body["interactive"]
    assert (link["type"], link["action"]["parameters"]) == (
        "cta_url",
        {"display_text": "Ansehen", "url": "https://shop.example/p/tent-2p"},
    )
    reply = _reply(tents, "messenger", "PSID_1", "Quanto costa il Ridgeline 2-person tent?")
    assert sending.message_send(message_id=reply.pk) == "sent"
    (element,) = graph_api.sends()[-1].body["message"]["attachment"]["payload"]["elements"]
    item = reply.cards[0]["item_id"]
    assert element["buttons"] == [
        {"type": "web_url", "url": "https://shop.example/p/tent-2p", "title": "Vedi"},
        {"type": "postback", "title": "Dettagli", "payload": f"item:{item}"},
    ]
    assert graph_api.rejected == []


@pytest.mark.django_db(transaction=True)
def test_the_catalog_id_is_set_only_on_the_business_own_whatsapp_account() -> None:
    shop, other = BusinessFactory(), BusinessFactory()
    account = connect(shop)
    page = connect(shop, "messenger")
    assert not channel_account_set_catalog(business=other, account_id=account.pk, catalog_id="1")
    assert not channel_account_set_catalog(business=shop, account_id=page.pk, catalog_id="1")
    assert not channel_account_set_catalog(business=shop, account_id=account.pk, catalog_id="cat-1")
    assert ChannelAccount.objects.get(pk=account.pk).commerce_catalog_id == ""
    assert channel_account_set_catalog(business=shop, account_id=account.pk, catalog_id=" 123 ")
    assert ChannelAccount.objects.get(pk=account.pk).commerce_catalog_id == "123"
