"""WhatsApp carts (``order`` messages) become orders checked against our catalog as of now, acknowledged with
our prices and total, and sent on (staff or a checkout link); Messenger and Instagram postbacks from our product
buttons get the product's answer. Deliveries are processed in-process; the Graph API is the stand-in."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from agents.disclosure import DEFAULT_DISCLOSURES
from agents.services import agent_update
from catalogs.models import Item
from messaging.meta import intake, parser
from messaging.meta.tasks import process_delivery, send_message
from messaging.models import Conversation, Message, Order
from messaging.replies.engine import run_reply
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.meta import (
    connect,
    page_delivery,
    page_event,
    signed,
    wa_change,
    wa_delivery,
    wa_text,
)

PHONE_ID = "106540352242922"


def order_message(
    wamid: str, items: list[dict[str, Any]], text: str = "", sender: str = "16505551234"
) -> dict[str, Any]:
    """A WhatsApp ``order`` message (a cart sent from a catalog), as the webhook reference shows it."""
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "order",
        "order": {"catalog_id": "4410001", "text": text, "product_items": items},
    }


CART = [
    {"product_retailer_id": "TENT-2P", "quantity": 2, "item_price": 249.00, "currency": "EUR"},
    {"product_retailer_id": "STOVE-1", "quantity": "1", "item_price": "35.00", "currency": "EUR"},
    {"product_retailer_id": "BAG-0C", "quantity": 1, "item_price": 189.50, "currency": "EUR"},
    {"product_retailer_id": "LAMP-9", "quantity": 3, "item_price": 12.00, "currency": "EUR"},
]
ACKNOWLEDGEMENT = (
    "Thank you for your order! Here it is with our current prices:\n"
    "- 2 x Ridgeline 2-person tent: 498.00 EUR (249.00 EUR each)\n"
    "- 1 x Pocket gas stove: 39.90 EUR (the price is now 39.90 EUR, not 35.00 EUR)\n"
    "- 1 x Alpine down sleeping bag: out of stock, not included\n"
    "- 3 x LAMP-9: not in our catalog, not included\n"
    "Total: 537.90 EUR\n"
)


def deliver(payload: Any, platform: str = "whatsapp") -> dict[str, Any] | None:
    body, header = signed(json.dumps(payload).encode())
    delivery_id = intake.webhook_delivery_store(platform=platform, body=body, signature=header)
    assert delivery_id is not None
    return process_delivery(delivery_id)


def test_the_parser_reads_a_cart_and_drops_lines_it_cannot_read() -> None:
    items = [
        *CART[:2],
        {"product_retailer_id": "", "quantity": 1},
        {"product_retailer_id": "X", "quantity": "none"},
        {"product_retailer_id": "Y", "quantity": 1, "item_price": "free"},
    ]
    (event,) = parser.parse(
        wa_delivery(wa_change(PHONE_ID, messages=[order_message("wamid.O", items)]))
    ).messages
    assert (event.kind, event.supported) == ("order", True)
    assert event.order == parser.InboundOrder(
        catalog_id="4410001",
        text="",
        lines=(
            parser.OrderLine("TENT-2P", 2, Decimal("249.0"), "EUR"),
            parser.OrderLine("STOVE-1", 1, Decimal("35.00"), "EUR"),
            parser.OrderLine("Y", 1, None, ""),
        ),
    )
    # A cart with nothing readable is a message the agent cannot read.
    (empty,) = parser.parse(
        wa_delivery(wa_change(PHONE_ID, messages=[order_message("wamid.E", [])]))
    ).messages
    assert (empty.order, empty.supported) == (None, False)


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV)
    connect(business)
    return business


@pytest.mark.django_db(transaction=True)
def test_an_order_is_checked_against_the_catalog_and_handed_to_staff(shop: Any, graph_api: Any) -> None:
    # Another business sells a LAMP-9: it is not this business's item.
    other = BusinessFactory()
    Item.objects.create(
        business=other, external_id="LAMP-9", title="Lamp", price=Decimal("12.00"), currency="EUR"
    )
    payload = wa_delivery(
        wa_change(PHONE_ID, messages=[order_message("wamid.ORDER1", CART, "Deliver Friday")])
    )
    assert deliver(payload) == {"order": 1}
    order = Order.objects.get()
    assert (order.business_id, order.totals, order.next_step, order.note) == (
        shop.pk,
        {"EUR": "537.90"},
        "staff",
        "Deliver Friday",
    )
    assert [
        (line.product_retailer_id, line.quantity, line.price, line.problem) for line in order.lines.all()
    ] == [
        ("TENT-2P", 2, Decimal("249.00"), ""),
        ("STOVE-1", 1, Decimal("39.90"), "price_changed"),
        ("BAG-0C", 1, None, "out_of_stock"),
        ("LAMP-9", 3, None, "unknown_item"),
    ]
    customer, reply = order.message, order.acknowledgement
    assert reply is not None
    assert customer.text == (
        "[order]\n- 2 x TENT-2P at 249.00 EUR\n- 1 x STOVE-1 at 35.00 EUR\n- 1 x BAG-0C at 189.50 EUR\n"
        "- 3 x LAMP-9 at 12.00 EUR\nDeliver Friday"
    )
    assert reply.text == ACKNOWLEDGEMENT + "A member of our team will confirm your order here shortly."
    assert (reply.reply_to_id, reply.disclosure) == (customer.pk, DEFAULT_DISCLOSURES["en"])
    # Handed to staff: the agent stays silent, the order waits in the inbox.
    conversation = Conversation.objects.get(pk=order.conversation_id)
    assert (conversation.state, conversation.handoff_reason) == ("human", f"order #{order.pk}")
    assert send_message(reply.pk) == "sent"
    assert [r.body["text"]["body"] for r in graph_api.sends()] == [reply.disclosure, reply.text]
    # Meta redelivers: nothing new.
    assert deliver(json.loads(json.dumps(payload)) | {"x": 1}) == {"duplicate": 1}
    assert Order.objects.count() == 1 and Message.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_checkout_template_sends_the_link_and_the_agent_keeps_the_conversation(shop: Any) -> None:
    agent_update(shop, checkout_url_template="https://shop.example/checkout?order={order_id}&items={items}")
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[order_message("wamid.ORDER2", CART)]))) == {
        "order": 1
    }
    order = Order.objects.get()
    url = f"https://shop.example/checkout?order={order.pk}&items=TENT-2P%3A2%2CSTOVE-1%3A1"
    assert (order.next_step, order.checkout_url) == ("checkout", url)
    assert order.acknowledgement is not None
    assert order.acknowledgement.text == ACKNOWLEDGEMENT + f"Complete your order here: {url}"
    assert Conversation.objects.get(pk=order.conversation_id).state == "bot"


@pytest.mark.django_db(transaction=True)
def test_the_acknowledgement_is_in_the_customers_language(shop: Any, graph_api: Any) -> None:
    # German, from the cart's note; no checkout address: staff confirm it.
    cart = order_message("wamid.DE", CART, "Bitte am Freitag liefern, danke!")
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[cart]))) == {"order": 1}
    reply = Order.objects.get().acknowledgement
    assert reply is not None
    assert reply.text == (
        "Vielen Dank für Ihre Bestellung! Hier ist sie mit unseren aktuellen Preisen:\n"
        "- 2 x Ridgeline 2-person tent: 498.00 EUR (je 249.00 EUR)\n"
        "- 1 x Pocket gas stove: 39.90 EUR (der Preis ist jetzt 39.90 EUR, nicht 35.00 EUR)\n"
        "- 1 x Alpine down sleeping bag: nicht vorrätig, nicht enthalten\n"
        "- 3 x LAMP-9: nicht in unserem Katalog, nicht enthalten\n"
        "Gesamt: 537.90 EUR\n"
        "Ein Mitarbeiter unseres Teams bestätigt Ihre Bestellung in Kürze hier."
    )
    # The disclosure before it speaks the same language.
    assert reply.disclosure == DEFAULT_DISCLOSURES["de"]
    assert send_message(reply.pk) == "sent"
    assert [r.body["text"]["body"] for r in graph_api.sends()] == [reply.disclosure, reply.text]

    # French, from the customer's last message before a cart without a note; with a checkout address.
    agent_update(shop, checkout_url_template="https://shop.example/checkout?order={order_id}")
    sender, now = "33612345678", int(time.time())
    question = wa_text("Bonjour, avez-vous des tentes ?", wamid="wamid.FR1", sender=sender, timestamp=now)
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[question]))) == {"received": 1}
    cart = order_message("wamid.FR2", CART[:2], sender=sender)
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[cart]))) == {"order": 1}
    order = Order.objects.get(message__channel_message_id="wamid.FR2")
    assert order.acknowledgement is not None
    assert order.acknowledgement.text == (
        "Merci pour votre commande ! La voici avec nos prix actuels :\n"
        "- 2 x Ridgeline 2-person tent: 498.00 EUR (249.00 EUR l'unité)\n"
        "- 1 x Pocket gas stove: 39.90 EUR (le prix est maintenant de 39.90 EUR, et non de 35.00 EUR)\n"
        "Total : 537.90 EUR\n"
        f"Finalisez votre commande ici : https://shop.example/checkout?order={order.pk}"
    )
    assert order.acknowledgement.disclosure == DEFAULT_DISCLOSURES["fr"]


@pytest.mark.django_db(transaction=True)
def test_a_bad_checkout_template_is_refused(shop: Any) -> None:
    from django.core.exceptions import ValidationError

    for template in ("http://shop.example/c?o={order_id}", "https://shop.example/c?o={order}"):
        with pytest.raises(ValidationError):
            agent_update(shop, checkout_url_template=template)


@pytest.mark.django_db(transaction=True)
def test_a_postback_from_our_details_button_gets_the_product_answer(import_catalog: Any) -> None:
    shop = BusinessFactory()
    import_catalog(shop, SMALL_CATALOG_CSV, embed=True)
    connect(shop, "messenger")
    tent = Item.objects.get(business=shop, external_id="TENT-2P")
    foreign = Item.objects.create(business=BusinessFactory(), external_id="T", title="Secret tent", price=1)
    events = [
        page_event(
            "PAGE_1", "PSID_1", postback={"mid": "m_pb_1", "title": "Details", "payload": f"item:{tent.pk}"}
        ),
        page_event(
            "PAGE_1",
            "PSID_2",
            postback={"mid": "m_pb_2", "title": "Details", "payload": f"item:{foreign.pk}"},
        ),
    ]
    assert deliver(page_delivery("page", [("PAGE_1", events)]), platform="messenger") == {"received": 2}
    mine, theirs = Message.objects.filter(role="customer").order_by("channel_message_id")
    # Our item's title is the question; another business's item id is not looked up: the button's title stays.
    assert (mine.text, theirs.text) == ("Ridgeline 2-person tent", "Details")
    assert async_to_sync(run_reply)(mine.pk) == "done"
    reply = Message.objects.get(reply_to=mine)
    assert [c["external_id"] for c in reply.cards] == ["TENT-2P"]
    assert "249.00 EUR" in reply.text
