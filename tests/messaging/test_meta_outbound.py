"""Outbound: splitting, cards, the 24-hour window, retries on 429/5xx, 131047, idempotent sends (a send Meta may
have taken is never repeated); accounts."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from typing import Any

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from messaging.meta import accounts, graph, outbound, sending
from messaging.meta.selectors import (
    channel_account_summary,
    channel_accounts_list,
    outbound_part_counts,
    webhook_urls,
)
from messaging.meta.tasks import send_message
from messaging.models import ChannelAccount, Contact, Conversation, Message, OutboundPart
from tests.factories import BusinessFactory
from tests.fixtures.meta import connect

# --- Splitting (pure) -------------------------------------------------------------------------------------------


def test_short_text_is_one_piece() -> None:
    assert outbound.split_text("  Hello there.  ", 4096) == ["Hello there."]
    assert outbound.split_text("   ", 4096) == []


def test_split_at_sentence_boundaries_under_the_limit() -> None:
    text = "First sentence here. Second one! Third one? Fourth."
    assert outbound.split_text(text, 35) == ["First sentence here. Second one!", "Third one? Fourth."]


def test_whatsapp_4096_characters() -> None:
    sentence = "The blue mug holds 350 ml and costs 12.50 EUR. "  # 47 characters
    text = (sentence * 200).strip()
    pieces = outbound.split_text(text, outbound.WHATSAPP_TEXT_LIMIT)
    assert [len(p) for p in pieces] == [4088, 4088, 1221]
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text


def test_instagram_1000_bytes_counts_utf8_bytes() -> None:
    text = "Ça coûte 12 €. " * 100
    limit, measure = outbound.text_limit("instagram")
    pieces = outbound.split_text(text, limit, measure)
    assert all(len(p.encode()) <= 1000 for p in pieces)
    assert max(len(p.encode()) for p in pieces) > 900
    assert " ".join(pieces) == text.strip()


def test_messenger_is_under_2000_and_runs_without_boundaries_are_cut_at_spaces_then_characters() -> None:
    words = "word " * 500
    pieces = outbound.split_text(words, outbound.MESSENGER_TEXT_LIMIT)
    assert all(len(p) <= 1999 for p in pieces)
    assert " ".join(pieces) == words.strip()
    blob = "x" * 4500
    assert [len(p) for p in outbound.split_text(blob, 1999)] == [1999, 1999, 502]
    emoji = "😀" * 600  # 4 bytes each
    assert [len(p.encode()) for p in outbound.split_text(emoji, 1000, lambda s: len(s.encode()))] == [
        1000,
        1000,
        400,
    ]


CARD = {
    "item_id": 7,
    "external_id": "MUG-1",
    "title": "Blue mug",
    "price": "14.00",
    "sale_price": "12.50",
    "currency": "EUR",
    "availability": "in_stock",
    "image_url": "https://shop.example/mug.jpg",
    "url": "https://shop.example/mug",
}


def test_one_card_without_a_catalog_is_a_cta_url_message_and_a_carousel_on_messenger() -> None:
    assert outbound.message_parts("whatsapp", "Here it is.", [CARD]) == [
        {"type": "text", "text": {"preview_url": False, "body": "Here it is."}},
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "body": {"text": "Blue mug\n12.50 EUR\nin stock"},
                "action": {
                    "name": "cta_url",
                    "parameters": {"display_text": "View", "url": "https://shop.example/mug"},
                },
                "header": {"type": "image", "image": {"link": "https://shop.example/mug.jpg"}},
            },
        },
    ]
    # Without an https link: the image with its caption; without an image either: the text alone.
    assert outbound.message_parts("whatsapp", "Here it is.", [{**CARD, "url": ""}])[1] == {
        "type": "image",
        "image": {"link": "https://shop.example/mug.jpg", "caption": "Blue mug\n12.50 EUR\nin stock"},
    }
    assert len(outbound.message_parts("whatsapp", "Here it is.", [{**CARD, "url": "", "image_url": ""}])) == 1
    assert outbound.message_parts("messenger", "Here it is.", [CARD]) == [
        {"text": "Here it is."},
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "generic",
                    "elements": [
                        {
                            "title": "Blue mug",
                            "subtitle": "12.50 EUR · in stock",
                            "image_url": "https://shop.example/mug.jpg",
                            "buttons": [
                                {"type": "web_url", "url": "https://shop.example/mug", "title": "View"},
                                {"type": "postback", "title": "Details", "payload": "item:7"},
                            ],
                        }
                    ],
                },
            }
        },
    ]


# --- Sending through the Graph API stand-in -------------------------------------------------------------------


def conversation_for(
    business: Any,
    channel: str = "whatsapp",
    external_id: str = "16505551234",
    *,
    ago: dt.timedelta = dt.timedelta(minutes=5),
) -> Conversation:
    contact = Contact.objects.create(business=business, channel=channel, external_id=external_id)
    return Conversation.objects.create(
        business=business, contact=contact, channel=channel, last_customer_message_at=timezone.now() - ago
    )


def outgoing(
    conversation: Conversation, text: str, *, role: str = "agent", cards: list[Any] | None = None
) -> Message:
    return Message.objects.create(
        business=conversation.business,
        conversation=conversation,
        channel=conversation.channel,
        role=role,
        text=text,
        status="done",
        cards=cards or [],
        delivery="queued",
    )


WA_TEXT = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "16505551234",
    "type": "text",
}


@pytest.mark.django_db(transaction=True)
def test_send_text_exact_request(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Yes, the blue mug is in stock.")
    assert sending.message_send(message_id=message.pk) == "sent"
    (request,) = graph_api.requests
    assert request.path == "/v23.0/106540352242922/messages"
    assert request.headers["Authorization"] == f"Bearer EAAG-token-for-{shop.slug}-0123456789"
    assert request.body == {
        **WA_TEXT,
        "text": {"preview_url": False, "body": "Yes, the blue mug is in stock."},
    }
    message.refresh_from_db()
    assert (message.delivery, message.channel_message_id, message.error) == ("sent", "wamid.out.1", "")


@pytest.mark.django_db(transaction=True)
def test_long_reply_and_cards_are_sent_in_order_once(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    text = ("A sentence of forty-four characters, or so. " * 100).strip()
    message = outgoing(conversation_for(shop), text, cards=[CARD])
    Message.objects.filter(pk=message.pk).update(disclosure="An automated assistant answers here.")
    assert sending.message_send(message_id=message.pk) == "sent"
    bodies = [r.body for r in graph_api.requests]
    assert [b["type"] for b in bodies] == ["text", "text", "interactive"]
    # The disclosure, then the answer's text, short beside the product (its first sentences).
    assert [b["text"]["body"] for b in bodies[:2]] == [
        "An automated assistant answers here.",
        ("A sentence of forty-four characters, or so. " * 7).strip(),
    ]
    assert list(OutboundPart.objects.order_by("index").values_list("state", "channel_message_id")) == [
        ("sent", "wamid.out.1"),
        ("sent", "wamid.out.2"),
        ("sent", "wamid.out.3"),
    ]
    # A redelivered task sends nothing again.
    assert sending.message_send(message_id=message.pk) == "skipped"
    Message.objects.filter(pk=message.pk).update(delivery="queued")
    assert sending.message_send(message_id=message.pk) == "sent"
    assert len(graph_api.requests) == 3


@pytest.mark.django_db(transaction=True)
def test_429_and_500_are_retried_with_backoff(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    graph_api.fail(429, code=130429)
    graph_api.fail(500)
    assert sending.message_send(message_id=message.pk) == "sent"
    assert [r.body for r in graph_api.requests] == [
        {**WA_TEXT, "text": {"preview_url": False, "body": "Hello."}}
    ] * 3
    message.refresh_from_db()
    assert message.delivery == "sent"


@pytest.mark.django_db(transaction=True)
def test_persistent_5xx_raises_then_a_later_run_sends_only_the_missing_parts(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    text = ("Forty characters in this sentence here. " * 120).strip()
    message = outgoing(conversation_for(shop), text)
    # Part 0 goes through, part 1 meets three 503s (the cap): the run stops, part 0 stays sent.
    graph_api.fail(503, times=3, after=1)
    with pytest.raises(graph.TransientGraphError, match="HTTP 503 after 3 tries"):
        sending.message_send(message_id=message.pk)
    assert list(OutboundPart.objects.order_by("index").values_list("state", flat=True)) == ["sent", "pending"]
    message.refresh_from_db()
    assert message.delivery == "queued"
    assert sending.message_send(message_id=message.pk) == "sent"
    sends = [r.body["text"]["body"] for r in graph_api.requests]
    assert len(sends) == 5  # part 0, three 503s for part 1, part 1
    assert sends[0] != sends[1] and sends[1] == sends[4]
    # The task gives up after its own retries: recorded on the message, not raised.
    other = outgoing(message.conversation, "Another.")
    sending.message_send_give_up(message_id=other.pk, error="HTTP 503 after 3 tries")
    other.refresh_from_db()
    assert (other.delivery, other.error) == ("failed", "not sent: HTTP 503 after 3 tries")


@pytest.mark.django_db(transaction=True)
def test_other_errors_are_final_and_recorded(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    graph_api.fail(400, code=131026, message="Message undeliverable")
    assert sending.message_send(message_id=message.pk) == "failed"
    message.refresh_from_db()
    assert (message.delivery, message.error) == ("failed", "131026: Message undeliverable")
    assert len(graph_api.requests) == 1
    assert sending.message_send(message_id=message.pk) == "skipped"
    assert len(graph_api.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_window_closed_without_template_sends_nothing(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop, ago=dt.timedelta(hours=24, seconds=1)), "Hello again.")
    assert sending.message_send(message_id=message.pk) == "window closed: no template configured, not sent"
    assert graph_api.requests == []
    message.refresh_from_db()
    assert (message.delivery, message.error) == ("failed", "window closed: no template configured, not sent")


@pytest.mark.django_db(transaction=True)
def test_window_closed_with_template_sends_the_template(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop, template_name="reply_waiting", template_language="de")
    message = outgoing(conversation_for(shop, ago=dt.timedelta(hours=24, seconds=1)), "Hello again.")
    assert sending.message_send(message_id=message.pk) == "sent"
    assert [r.body for r in graph_api.requests] == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "16505551234",
            "type": "template",
            "template": {"name": "reply_waiting", "language": {"code": "de"}},
        }
    ]
    message.refresh_from_db()
    assert (message.delivery, message.error) == ("sent", "window closed: sent template reply_waiting")


@pytest.mark.django_db(transaction=True)
def test_131047_from_meta_falls_back_to_the_template(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop, template_name="reply_waiting")
    message = outgoing(conversation_for(shop), "Hello.")
    graph_api.window_closed()
    assert sending.message_send(message_id=message.pk) == "sent"
    assert [r.body.get("type") for r in graph_api.requests] == ["text", "template"]
    assert graph_api.requests[1].body["template"] == {"name": "reply_waiting", "language": {"code": "en_US"}}
    message.refresh_from_db()
    assert (message.delivery, message.error) == (
        "sent",
        "window closed (131047): sent template reply_waiting",
    )


@pytest.mark.django_db(transaction=True)
def test_131047_without_template_is_recorded_not_raised(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    graph_api.window_closed()
    assert sending.message_send(message_id=message.pk) == "window closed"
    message.refresh_from_db()
    assert message.delivery == "failed"
    assert message.error.startswith("window closed (131047): (#131047) Re-engagement message")


@pytest.mark.django_db(transaction=True)
def test_messenger_and_instagram_windows(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop, "messenger", page_id="PAGE_1")
    connect(shop, "instagram", instagram_account_id="IG_1", page_id="PAGE_IG")
    old = dt.timedelta(days=2)
    staff = outgoing(conversation_for(shop, "messenger", "PSID_1", ago=old), "A person here.", role="staff")
    agent = outgoing(conversation_for(shop, "messenger", "PSID_2", ago=old), "The bot.", role="agent")
    insta = outgoing(conversation_for(shop, "instagram", "IGSID_1"), "é" * 600)
    assert sending.message_send(message_id=staff.pk) == "sent"
    assert sending.message_send(message_id=agent.pk) == "window closed: not sent"
    assert sending.message_send(message_id=insta.pk) == "sent"
    assert graph_api.requests[0].body == {
        "recipient": {"id": "PSID_1"},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
        "message": {"text": "A person here."},
    }
    # Instagram: 1000 bytes per message, sent from the page of a Facebook-Login setup.
    assert [r.path for r in graph_api.requests[1:]] == ["/v23.0/PAGE_IG/messages"] * 2
    assert [len(r.body["message"]["text"].encode()) for r in graph_api.requests[1:]] == [1000, 200]


@pytest.mark.django_db(transaction=True)
def test_no_connected_account_is_recorded(graph_api: Any) -> None:
    shop = BusinessFactory()
    message = outgoing(conversation_for(shop), "Hello.")
    assert sending.message_send(message_id=message.pk) == "failed"
    message.refresh_from_db()
    assert (message.delivery, message.error) == ("failed", "no connected whatsapp account")
    assert graph_api.requests == []


# --- Accounts --------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_secrets_are_encrypted_at_rest_and_masked_in_selectors() -> None:
    shop = BusinessFactory()
    account = connect(shop, access_token="EAAG-very-secret-token-ABCD", app_secret="app-secret-WXYZ-123456")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, app_secret FROM messaging_channelaccount WHERE id = %s", [account.pk]
        )
        raw_token, raw_secret = cursor.fetchone()
    assert raw_token.startswith("fernet:") and "EAAG-very-secret" not in raw_token
    assert raw_secret.startswith("fernet:") and "WXYZ" not in raw_secret
    assert ChannelAccount.objects.get().access_token == "EAAG-very-secret-token-ABCD"
    (summary,) = channel_accounts_list(shop)
    assert (summary.access_token, summary.app_secret) == ("••••ABCD", "••••3456")
    assert "EAAG" not in repr(summary)
    assert summary.webhook_url == "http://127.0.0.1:8000/webhooks/whatsapp"
    assert webhook_urls()["instagram"] == "http://127.0.0.1:8000/webhooks/instagram"


@pytest.mark.django_db(transaction=True)
def test_connect_validates_and_refuses_another_business_s_number() -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    account = connect(shop_a)
    with pytest.raises(accounts.ChannelAccountError, match="phone_number_id is required"):
        connect(shop_b, phone_number_id="")
    with pytest.raises(accounts.ChannelAccountError, match="connected to another business"):
        connect(shop_b)
    assert ChannelAccount.objects.filter(business=shop_b).count() == 0
    # Reconnecting replaces the token on the same row.
    again = connect(shop_a, access_token="EAAG-new-token-000000000")
    assert again.pk == account.pk
    assert ChannelAccount.objects.get().access_token == "EAAG-new-token-000000000"


@pytest.mark.django_db(transaction=True)
def test_disconnect_is_scoped_to_the_business_and_erases_secrets() -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    account = connect(shop_a, app_secret="app-secret-of-a")
    assert accounts.channel_account_disconnect(business=shop_b, account_id=account.pk) is False
    account.refresh_from_db()
    assert account.active and account.access_token
    assert channel_account_summary(shop_b, account.pk) is None
    assert accounts.channel_account_disconnect(business=shop_a, account_id=account.pk) is True
    account.refresh_from_db()
    assert (account.active, account.access_token, account.app_secret) == (False, "", "")
    assert channel_accounts_list(shop_a) == []
    # The number is free for another business now.
    assert connect(shop_b).business_id == shop_b.pk


@pytest.mark.django_db(transaction=True)
def test_a_part_held_by_another_run_is_never_sent_again(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    body = {**WA_TEXT, "text": {"preview_url": False, "body": "Hello."}}
    part = OutboundPart.objects.create(
        business=shop,
        message=message,
        index=0,
        channel="whatsapp",
        body=body,
        state="sending",
        claimed_at=timezone.now(),
    )
    assert sending.message_send(message_id=message.pk) == "busy"
    assert graph_api.requests == []
    # The holder died, maybe after Meta took the part: after the lease it is reported, not sent.
    OutboundPart.objects.filter(pk=part.pk).update(claimed_at=timezone.now() - sending.CLAIM_LEASE)
    assert sending.message_send(message_id=message.pk) == "ambiguous"
    assert graph_api.requests == []
    part.refresh_from_db()
    message.refresh_from_db()
    assert part.state == "ambiguous"
    assert (message.delivery, message.get_delivery_display()) == ("ambiguous", "Unconfirmed")
    assert message.error == (
        "unconfirmed: part 1 of 1 may have reached the customer (the worker sending it stopped); not resent"
    )


def _dead_pid() -> int:
    """A pid on this host that no process has (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.django_db(transaction=True)
def test_a_part_whose_worker_on_this_host_died_is_reported_at_once_not_after_the_lease(
    graph_api: Any,
) -> None:
    # Found by bench/faults.py: the outbound worker SIGKILLed mid-send left its message queued for the
    # 5-minute lease (and its task for the broker's 15-minute visibility timeout).
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    body = {**WA_TEXT, "text": {"preview_url": False, "body": "Hello."}}
    part = OutboundPart.objects.create(
        business=shop,
        message=message,
        index=0,
        channel="whatsapp",
        body=body,
        state="sending",
        claimed_at=timezone.now(),
        claimed_by=f"{socket.gethostname()}:{os.getpid()}",
    )
    assert sending.message_send(message_id=message.pk) == "busy"  # its worker (this process) lives
    OutboundPart.objects.filter(pk=part.pk).update(claimed_by=f"{socket.gethostname()}:{_dead_pid()}")
    assert sending.message_send(message_id=message.pk) == "ambiguous"
    assert graph_api.requests == []
    message.refresh_from_db()
    assert message.delivery == "ambiguous"
    # A worker on another host is only known dead by its lease.
    other = outgoing(conversation_for(shop, external_id="16505550000"), "Hi.")
    OutboundPart.objects.create(
        business=shop,
        message=other,
        index=0,
        channel="whatsapp",
        body=body,
        state="sending",
        claimed_at=timezone.now(),
        claimed_by=f"another-host:{_dead_pid()}",
    )
    assert sending.message_send(message_id=other.pk) == "busy"


@pytest.mark.django_db(transaction=True)
def test_the_send_sweeper_queues_again_the_sends_whose_task_was_lost(
    graph_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(sending, "enqueue", lambda name, *args: queued.append((name, args)))
    shop = BusinessFactory()
    connect(shop)
    conversation = conversation_for(shop)
    never_ran = outgoing(conversation, "Never ran.")
    died_mid_send = outgoing(conversation, "Died mid-send.")
    sending_now = outgoing(conversation, "Being sent.")
    waits_for_retry = outgoing(conversation, "Waits for its retry.")
    recent = outgoing(conversation, "Just finished.")
    sent = outgoing(conversation, "Sent.")
    for message, state, claimer in (
        (died_mid_send, "sending", f"{socket.gethostname()}:{_dead_pid()}"),
        (sending_now, "sending", f"{socket.gethostname()}:{os.getpid()}"),
        (waits_for_retry, "pending", ""),
    ):
        OutboundPart.objects.create(
            business=shop,
            message=message,
            index=0,
            channel="whatsapp",
            body=WA_TEXT,
            state=state,
            claimed_at=timezone.now() if state == "sending" else None,
            claimed_by=claimer,
        )
    Message.objects.filter(pk=sent.pk).update(delivery="sent")
    old = timezone.now() - sending.SEND_GRACE - dt.timedelta(seconds=1)
    Message.objects.exclude(pk=recent.pk).update(updated_at=old)
    assert sending.sends_sweep() == [never_ran.pk, died_mid_send.pk]
    assert queued == [
        ("messaging.meta.tasks.send_message", (never_ran.pk,)),
        ("messaging.meta.tasks.send_message", (died_mid_send.pk,)),
    ]
    # Once per SEND_GRACE: the next sweep leaves them to the tasks just queued.
    assert sending.sends_sweep() == []
    assert sending.sends_sweep(now=timezone.now() + sending.SEND_GRACE * 2) == [
        never_ran.pk,
        died_mid_send.pk,
        recent.pk,
    ]
    assert graph_api.requests == []


# --- Sends whose outcome is unknown (Graph stand-in faults) -------------------------------------------------------


class FaultyTransport(httpx.BaseTransport):
    """Raises ``errors`` for the first requests, in turn (nothing reaches the stand-in), then sends for real."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.handle_request(request)


def faulty_client(monkeypatch: Any, *errors: BaseException) -> None:
    client = httpx.Client(transport=FaultyTransport(*errors), timeout=5.0)
    monkeypatch.setattr(graph, "_client", lambda: client)


def long_text() -> str:
    return ("Forty characters in this sentence here. " * 120).strip()  # two WhatsApp parts


def part_states() -> list[str]:
    return list(OutboundPart.objects.order_by("index").values_list("state", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_read_timeout_after_meta_accepted_is_not_resent_and_is_unconfirmed(
    graph_api: Any, settings: Any, caplog: Any
) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), long_text())
    settings.META_GRAPH_TIMEOUT = 0.2
    graph_api.accept_then_time_out(seconds=1.0)
    with caplog.at_level("WARNING", logger="messaging.meta.sending"):
        # Through the task: an unconfirmed send is an outcome, not an error to retry.
        assert send_message(message.pk) == "ambiguous"
    assert len(graph_api.sends()) == 1  # Meta took part 0 once; part 1 was not sent after it
    assert part_states() == ["ambiguous", "failed"]
    message.refresh_from_db()
    assert message.delivery == "ambiguous"
    assert message.error == (
        "unconfirmed: part 1 of 2 may have reached the customer "
        "(no answer after the request was sent (ReadTimeout)); not resent"
    )
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "outbound_send_ambiguous"]
    assert (record.message_id, record.levelname) == (message.pk, "WARNING")
    assert outbound_part_counts() == {"pending": 0, "sending": 0, "sent": 0, "failed": 1, "ambiguous": 1}
    # A redelivered task, or an operator re-queueing the message, sends nothing again.
    assert send_message(message.pk) == "skipped"
    Message.objects.filter(pk=message.pk).update(delivery="queued")
    assert sending.message_send(message_id=message.pk) == "ambiguous"
    assert len(graph_api.sends()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_after_the_request_is_unconfirmed(graph_api: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    graph_api.accept_then_drop()
    assert sending.message_send(message_id=message.pk) == "ambiguous"
    assert len(graph_api.sends()) == 1
    assert part_states() == ["ambiguous"]
    message.refresh_from_db()
    assert "(RemoteProtocolError)" in message.error
    assert message.delivery == "ambiguous"


@pytest.mark.django_db(transaction=True)
def test_a_connect_error_is_retried_and_sent_once(graph_api: Any, monkeypatch: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    faulty_client(monkeypatch, httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"))
    assert sending.message_send(message_id=message.pk) == "sent"
    assert [r.body for r in graph_api.sends()] == [
        {**WA_TEXT, "text": {"preview_url": False, "body": "Hello."}}
    ]
    message.refresh_from_db()
    assert (message.delivery, message.channel_message_id) == ("sent", "wamid.out.1")


@pytest.mark.django_db(transaction=True)
def test_a_connect_error_on_every_try_leaves_the_part_to_a_later_run(
    graph_api: Any, monkeypatch: Any
) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), "Hello.")
    faulty_client(monkeypatch, *[httpx.ConnectError("refused") for _ in range(3)])
    with pytest.raises(graph.TransientGraphError, match="transport error: ConnectError after 3 tries"):
        sending.message_send(message_id=message.pk)
    assert graph_api.sends() == []
    assert part_states() == ["pending"]
    assert sending.message_send(message_id=message.pk) == "sent"
    assert len(graph_api.sends()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_after_a_crash_mid_send_does_not_resend_sent_parts(graph_api: Any, monkeypatch: Any) -> None:
    shop = BusinessFactory()
    connect(shop)
    message = outgoing(conversation_for(shop), long_text(), cards=[CARD])
    # Three parts: the disclosure, the answer's text, the product.
    Message.objects.filter(pk=message.pk).update(disclosure="An automated assistant answers here.")
    # Part 0 goes out; the worker dies while sending part 1 (before or after Meta took it: nobody knows).
    real = httpx.Client(timeout=5.0)
    calls: list[str] = []

    def crash_on_second(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 2:
            raise SystemExit("worker killed")
        return real.send(request)

    client = httpx.Client(transport=httpx.MockTransport(crash_on_second), timeout=5.0)
    monkeypatch.setattr(graph, "_client", lambda: client)
    with pytest.raises(SystemExit):
        sending.message_send(message_id=message.pk)
    assert len(graph_api.sends()) == 1
    assert part_states() == ["sent", "sending", "pending"]
    monkeypatch.undo()
    # The task runs again (acks_late redelivery): while the claim is fresh it waits, then reports.
    assert sending.message_send(message_id=message.pk) == "busy"
    OutboundPart.objects.filter(state="sending").update(claimed_at=timezone.now() - sending.CLAIM_LEASE)
    assert sending.message_send(message_id=message.pk) == "ambiguous"
    assert len(graph_api.sends()) == 1  # part 0 was never sent again, part 1 never repeated
    assert part_states() == ["sent", "ambiguous", "failed"]
    message.refresh_from_db()
    assert (message.delivery, message.channel_message_id) == ("ambiguous", "")
