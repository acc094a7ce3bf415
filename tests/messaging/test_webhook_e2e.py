"""End to end: signed webhook -> real uvicorn (ASGI fast path) -> Postgres -> Redis -> real Celery worker
(process_pending, the reply task, send_message) -> the Graph API stand-in. See tests/fixtures/stack.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.test import Client

from agents.disclosure import DEFAULT_DISCLOSURES
from messaging.models import Conversation, Message, Order, WebhookDelivery
from tests.factories import BusinessFactory, MembershipFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.media import OGG
from tests.fixtures.meta import connect, signed, wa_change, wa_delivery, wa_status, wa_text

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "e2e-own-app-secret"


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def post_until_accepted(stack: Any, body: bytes, header: str) -> None:
    """POST a signed WhatsApp delivery until the server accepts it. The server knows a newly connected
    account's own secret within WEBHOOK_SECRET_CACHE_SECONDS (30): until then it refuses the delivery, and
    Meta delivers it again, as this loop does."""
    with httpx.Client(timeout=10) as client:

        def post() -> bool:
            response = client.post(
                f"{stack.asgi.url}/webhooks/whatsapp",
                content=body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": header},
            )
            return (response.status_code, response.text) == (200, "EVENT_RECEIVED")

        wait_for(post, timeout=45)


def test_whatsapp_message_is_answered_once_through_the_real_worker(stack: Any, stack_graph_api: Any) -> None:
    shop = BusinessFactory()
    # The business's own app secret: the server process verifies with it (no META_APP_SECRET there).
    connect(shop, phone_number_id="555000111", waba_id="WABA_E2E", app_secret=SECRET)
    wamid = f"wamid.e2e.{time.time_ns()}"
    payload = wa_delivery(
        wa_change(
            "555000111",
            messages=[wa_text("Bonjour, vous êtes ouverts ?", wamid=wamid, timestamp=int(time.time()))],
        ),
        waba_id="WABA_E2E",
    )
    body, header = signed(payload, secret=SECRET)
    url = f"{stack.asgi.url}/webhooks/whatsapp"
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": header}
    with httpx.Client(timeout=10) as client:
        response = client.post(url, content=body, headers=headers)
        assert (response.status_code, response.text) == (200, "EVENT_RECEIVED")
        # A bad signature is refused by the server process too.
        assert (
            client.post(
                url, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"}
            ).status_code
            == 403
        )

        def sent() -> list[Any]:
            return stack_graph_api.sends()

        try:
            agent = wait_for(
                lambda: Message.objects.filter(business=shop, role="agent", delivery="sent").first()
            )
        except AssertionError:
            print(list(WebhookDelivery.objects.values_list("state", "summary", "error")))
            print(list(Message.objects.values_list("role", "status", "delivery", "error")))
            print(stack_graph_api.requests)
            print(stack.worker.log()[-6000:])
            raise
        # The conversation's first reply: the AI disclosure (in the customer's language), then the answer.
        assert agent.disclosure == DEFAULT_DISCLOSURES["fr"]
        assert [(send.path, send.body) for send in sent()] == [
            (
                "/v23.0/555000111/messages",
                {
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": "16505551234",
                    "type": "text",
                    "text": {"preview_url": False, "body": body},
                },
            )
            for body in (agent.disclosure, agent.text)
        ]
        # The inbound message was marked read, with a typing indicator.
        assert {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
            "typing_indicator": {"type": "text"},
        } in [r.body for r in stack_graph_api.requests]

        # Meta redelivers the same message, then reports the reply read: one reply, delivery moves on.
        assert client.post(url, content=body, headers=headers).status_code == 200
        status_body, status_header = signed(
            wa_delivery(
                wa_change(
                    "555000111",
                    # Both parts (the disclosure's and the answer's): a message is as far as its least part.
                    statuses=[
                        wa_status(part_id, "read")
                        for part_id in agent.outbound_parts.values_list("channel_message_id", flat=True)
                    ],
                ),
                waba_id="WABA_E2E",
            ),
            secret=SECRET,
        )
        status_headers = {**headers, "X-Hub-Signature-256": status_header}
        assert client.post(url, content=status_body, headers=status_headers).status_code == 200
    wait_for(lambda: Message.objects.filter(pk=agent.pk, delivery="read").exists())
    wait_for(lambda: not WebhookDelivery.objects.exclude(state="done").exists())
    # The redelivery (the same bytes) was acknowledged and not stored (docs/security.md, "Webhook intake").
    assert WebhookDelivery.objects.count() == 2
    assert Message.objects.filter(business=shop, role="customer").count() == 1
    assert Message.objects.filter(business=shop, role="agent").count() == 1
    assert len(stack_graph_api.sends()) == 2


def test_a_signed_order_webhook_becomes_an_order_in_the_inbox_with_our_prices(
    stack: Any, stack_graph_api: Any, import_catalog: Any
) -> None:
    shop = BusinessFactory()
    import_catalog(shop, SMALL_CATALOG_CSV)
    connect(shop, phone_number_id="555000222", waba_id="WABA_ORDER", app_secret=SECRET)
    cart = [
        {"product_retailer_id": "TENT-2P", "quantity": 2, "item_price": 249.00, "currency": "EUR"},
        # The customer's app showed an old price; the bag is out of stock.
        {"product_retailer_id": "STOVE-1", "quantity": 1, "item_price": 35.00, "currency": "EUR"},
        {"product_retailer_id": "BAG-0C", "quantity": 1, "item_price": 189.50, "currency": "EUR"},
    ]
    order_message = {
        "from": "16505559876",
        "id": f"wamid.order.{time.time_ns()}",
        "timestamp": str(int(time.time())),
        "type": "order",
        "order": {"catalog_id": "4410001", "text": "", "product_items": cart},
    }
    body, header = signed(
        wa_delivery(wa_change("555000222", messages=[order_message]), waba_id="WABA_ORDER"), secret=SECRET
    )
    post_until_accepted(stack, body, header)
    order = wait_for(lambda: Order.objects.filter(business=shop).first())
    assert order.totals == {"EUR": "537.90"}
    ack = wait_for(lambda: Message.objects.filter(business=shop, role="agent", delivery="sent").first())
    assert "Total: 537.90 EUR" in ack.text
    assert "1 x Pocket gas stove: 39.90 EUR (the price is now 39.90 EUR, not 35.00 EUR)" in ack.text
    assert "1 x Alpine down sleeping bag: out of stock, not included" in ack.text
    assert [send.body["text"]["body"] for send in stack_graph_api.sends()] == [ack.disclosure, ack.text]
    # In the inbox: the cart as sent and our acknowledgement, the conversation handed to staff.
    owner = MembershipFactory(business=shop).user
    staff_client = Client()
    staff_client.force_login(owner)
    page = staff_client.get(f"/app/{shop.slug}/inbox/{order.conversation_id}/").content.decode()
    assert "- 1 x STOVE-1 at 35.00 EUR" in page
    assert "Total: 537.90 EUR" in page
    assert Conversation.objects.get(pk=order.conversation_id).state == "human"


def test_a_voice_note_is_transcribed_and_answered_through_the_real_worker(
    stack: Any, stack_graph_api: Any, stack_transcriber: Any, import_catalog: Any
) -> None:
    """Signed webhook -> uvicorn -> worker: the delivery stores the voice note as being read, the read_media
    task downloads it through Graph and has the pool's speech-to-text endpoint transcribe it, and the reply
    to the transcript is sent on WhatsApp."""
    shop = BusinessFactory()
    import_catalog(shop, SMALL_CATALOG_CSV, embed=True)
    account = connect(shop, phone_number_id="555000333", waba_id="WABA_VOICE", app_secret=SECRET)
    stack_graph_api.add_media("VOICE_E2E", OGG, token=account.access_token, mime="audio/ogg")
    stack_transcriber.reset_counters()
    stack_transcriber.transcript = "How much is the Ridgeline 2-person tent?"
    stack.inference.script("The Ridgeline 2-person tent costs 249.00 EUR.")
    voice = {
        "from": "16505550001",
        "id": f"wamid.voice.{time.time_ns()}",
        "timestamp": str(int(time.time())),
        "type": "audio",
        "audio": {"id": "VOICE_E2E", "mime_type": "audio/ogg; codecs=opus", "voice": True},
    }
    body, header = signed(
        wa_delivery(wa_change("555000333", messages=[voice]), waba_id="WABA_VOICE"), secret=SECRET
    )
    post_until_accepted(stack, body, header)
    try:
        reply = wait_for(lambda: Message.objects.filter(business=shop, role="agent", delivery="sent").first())
    except AssertionError:
        print(list(Message.objects.filter(business=shop).values_list("role", "status", "text", "error")))
        print(stack.worker.log()[-6000:])
        raise
    customer = Message.objects.get(business=shop, role="customer")
    assert (customer.text, customer.status) == ("How much is the Ridgeline 2-person tent?", "answered")
    assert reply.reply_to_id == customer.pk and "249.00 EUR" in reply.text
    (transcription,) = stack_transcriber.transcriptions
    assert transcription == ("whisper-test", "audio.ogg", "audio/ogg", OGG)
    media = customer.media.get()
    assert (media.kind, media.state, media.description) == ("audio", "read", customer.text)
    sent = [send.body for send in stack_graph_api.sends()]
    assert any("249.00 EUR" in (part.get("text") or {}).get("body", "") for part in sent), sent
