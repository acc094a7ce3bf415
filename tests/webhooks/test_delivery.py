"""Outbound webhooks against a loopback receiver: the signature verifies, each conversation's events arrive
in order, failures are retried with back-off until they succeed or are abandoned, an endpoint that keeps
failing is disabled, one business's events never reach another's endpoint, and the address rule holds."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from businesses.models import Business
from messaging.models import Channel
from messaging.services import message_receive
from outbox.models import EventSubscription, EventType, OutboxEvent
from tests.factories import BusinessFactory
from tests.webhooks.conftest import Receiver
from webhooks.dispatch import REQUEUE_AFTER, deliveries_sweep, delivery_attempt, events_fan_out
from webhooks.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from webhooks.services import DISABLED_ERROR, endpoint_create, endpoint_enable, endpoint_send_test

pytestmark = pytest.mark.django_db

ALL_EVENTS = [t.value for t in EventType if t != EventType.TEST]


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/webhooks.md gives it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def endpoint(
    business: Business, receiver: Receiver, path: str = "/hooks", events: list[str] | None = None
) -> WebhookEndpoint:
    return endpoint_create(business=business, url=receiver.url + path, events=events or ALL_EVENTS)


def say(business: Business, text: str, visitor: str = "visitor-1") -> None:
    assert message_receive(business=business, channel=Channel.WIDGET, contact_external_id=visitor, text=text)


def fan_out_all(business: Business) -> list[int]:
    ids = []
    for event_id in (
        OutboxEvent.objects.filter(business=business, fanned_out_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    ):
        ids += events_fan_out(event_id=event_id)
    return ids


def attempt(delivery: EndpointDelivery, now: dt.datetime | None = None) -> str:
    delivery.refresh_from_db()
    return delivery_attempt(delivery_id=delivery.pk, attempts=delivery.attempts, now=now)


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received]


def test_a_delivery_is_signed_and_verifies(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver)
    say(business, "Do you have the trail boot in 42?")
    fan_out_all(business)
    deliveries = list(EndpointDelivery.objects.filter(endpoint=hook).order_by("event_id"))
    assert [d.event.type for d in deliveries] == ["conversation.created", "message.created"]
    assert [attempt(d) for d in deliveries] == ["succeeded", "succeeded"]

    created, message = receiver.received
    for request in receiver.received:
        assert verify(hook.secret, request.headers["Bizagent-Signature"], request.body)
        assert request.headers["Content-Type"] == "application/json"
        assert request.path == "/hooks"
    assert not verify(hook.secret, message.headers["Bizagent-Signature"], message.body.replace(b"42", b"43"))
    assert not verify("whsec_another", message.headers["Bizagent-Signature"], message.body)
    body = json.loads(message.body)
    event = deliveries[1].event
    assert message.headers["Bizagent-Event-Id"] == body["id"] == str(event.public_id)
    assert message.headers["Bizagent-Event-Type"] == "message.created"
    assert message.headers["Bizagent-Delivery-Attempt"] == "1"
    assert body["type"] == "message.created" and body["business"] == business.slug
    assert body["data"]["text"] == "Do you have the trail boot in 42?"
    assert body["data"]["role"] == "customer" and body["data"]["channel"] == "widget"
    assert body["data"]["conversation_id"] == json.loads(created.body)["data"]["conversation_id"]
    d = deliveries[1]
    d.refresh_from_db()
    assert (d.state, d.attempts, d.last_status_code, d.last_error) == ("succeeded", 1, 200, "")
    log = d.attempt_log.get()
    assert (log.number, log.status_code, log.error, log.response_snippet) == (1, 200, "", '{"ok": true}')


def test_nothing_is_stored_for_a_business_without_a_listening_endpoint(receiver: Receiver) -> None:
    quiet, imports_only = BusinessFactory(), BusinessFactory()
    endpoint(imports_only, receiver, events=["import.finished"])
    say(quiet, "hello")
    say(imports_only, "hello")
    assert OutboxEvent.objects.count() == 0
    assert list(EventSubscription.objects.values_list("business_id", "type")) == [
        (imports_only.pk, "import.finished")
    ]


def test_a_duplicate_message_emits_nothing_more(receiver: Receiver) -> None:
    business = BusinessFactory()
    endpoint(business, receiver, events=["message.created"])
    for _ in range(2):
        message_receive(
            business=business,
            channel=Channel.WHATSAPP,
            contact_external_id="4915",
            text="hi",
            channel_message_id="wamid.1",
        )
    assert OutboxEvent.objects.filter(business=business, type="message.created").count() == 1


def test_events_of_a_conversation_arrive_in_order(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    for text in ("one", "two", "three"):
        say(business, text)
    say(business, "elsewhere", visitor="visitor-2")
    fan_out_all(business)
    first, second, third, other = EndpointDelivery.objects.filter(endpoint=hook).order_by("event_id")

    receiver.answer(500)
    assert attempt(first) == "failed"
    # Held back while the first is open; another conversation is not.
    assert attempt(second) == "skipped"
    assert attempt(third) == "skipped"
    assert attempt(other) == "succeeded"
    first.refresh_from_db()
    later = first.next_attempt_at + dt.timedelta(seconds=1)
    assert attempt(second, now=later) == "skipped"
    assert attempt(first, now=later) == "succeeded"
    assert attempt(second, now=later) == "succeeded"
    assert attempt(third, now=later) == "succeeded"
    assert [b["data"]["text"] for b in bodies(receiver)] == ["one", "elsewhere", "one", "two", "three"]


def test_an_event_waits_for_an_earlier_one_not_fanned_out_yet(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    say(business, "first")
    say(business, "second")
    first_event, second_event = OutboxEvent.objects.filter(business=business).order_by("pk")
    # The second event's fan-out runs first (two workers): its delivery waits for the first event.
    (second,) = events_fan_out(event_id=second_event.pk)
    assert delivery_attempt(delivery_id=second, attempts=0) == "skipped"
    # The first event's fan-out queues its own delivery, the head of the line; that one, delivered, queues
    # the next (webhooks.tasks.deliver on commit: called here).
    (first,) = events_fan_out(event_id=first_event.pk)
    assert first != second
    assert delivery_attempt(delivery_id=first, attempts=0) == "succeeded"
    assert delivery_attempt(delivery_id=second, attempts=0) == "succeeded"
    assert [b["data"]["text"] for b in bodies(receiver)] == ["first", "second"]
    assert events_fan_out(event_id=first_event.pk) == []  # run twice: nothing more
    assert EndpointDelivery.objects.filter(endpoint=hook).count() == 2


def test_failures_are_retried_with_back_off_then_succeed(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    say(business, "hi")
    fan_out_all(business)
    delivery = EndpointDelivery.objects.get(endpoint=hook)
    receiver.answer(500)
    receiver.stall(1.5)  # past the 0.5 s timeout
    receiver.answer(503)

    now = timezone.now()
    outcomes, delays = [], []
    for _ in range(4):
        outcomes.append(attempt(delivery, now=now))
        delivery.refresh_from_db()
        if delivery.state == "failed":
            delays.append((delivery.next_attempt_at - now).total_seconds())
            # Not due yet: the sweeper leaves it; a stale task for an earlier attempt does nothing.
            assert deliveries_sweep(now=now) == []
            assert (
                delivery_attempt(delivery_id=delivery.pk, attempts=delivery.attempts - 1, now=now)
                == "skipped"
            )
            now = delivery.next_attempt_at
            assert deliveries_sweep(now=now) == [delivery.pk]
            delivery.refresh_from_db()
            assert delivery.next_attempt_at == now + REQUEUE_AFTER
    assert outcomes == ["failed", "failed", "failed", "succeeded"]
    # First 1 s, doubling, each with up to 20% jitter either way (plus the attempt's own duration).
    for n, delay in enumerate(delays):
        assert 0.8 * 2**n <= delay <= 1.2 * 2**n + 2, delays
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, None), (3, 503), (4, 200)]
    assert attempts[0].error == "HTTP 500" and attempts[0].response_snippet == "receiver says no"
    assert attempts[1].error.startswith("timed out")
    assert attempts[1].duration_ms >= 400
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("succeeded", 4, 200)
    # The same event id every time: the receiver de-duplicates on it.
    assert len({r.headers["Bizagent-Event-Id"] for r in receiver.received}) == 1
    assert [r.headers["Bizagent-Delivery-Attempt"] for r in receiver.received] == ["1", "2", "3", "4"]
    assert attempt(delivery) == "skipped"  # finished: a task run twice sends nothing
    assert len(receiver.received) == 4
    hook.refresh_from_db()
    assert (hook.failing_since, hook.abandoned_in_a_row) == (None, 0)


def test_an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_again(
    receiver: Receiver, settings: Any
) -> None:
    settings.OUTBOUND_WEBHOOK_RETRY_WINDOW_SECONDS = 5.0
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    for visitor in ("a", "b", "c", "d"):
        say(business, f"hi from {visitor}", visitor=visitor)
    fan_out_all(business)
    deliveries = list(EndpointDelivery.objects.filter(endpoint=hook).order_by("event_id"))
    receiver.answer(500, times=3)

    # Past the 5 s window: each failed attempt abandons its delivery; the third in a row disables the endpoint.
    later = timezone.now() + dt.timedelta(seconds=10)
    assert [attempt(d, now=later) for d in deliveries[:3]] == ["abandoned"] * 3
    hook.refresh_from_db()
    assert not hook.is_active
    assert "3 deliveries in a row were abandoned" in hook.disabled_reason
    assert "last error: HTTP 500" in hook.disabled_reason
    last = deliveries[3]
    last.refresh_from_db()
    assert (last.state, last.last_error, last.attempts) == ("abandoned", DISABLED_ERROR, 0)
    assert attempt(last) == "skipped"
    assert len(receiver.received) == 3
    # A disabled endpoint listens to nothing: new events are not even stored.
    assert not EventSubscription.objects.filter(business=business).exists()
    say(business, "anyone there?")
    assert OutboxEvent.objects.filter(business=business, fanned_out_at__isnull=True).count() == 0
    assert endpoint_send_test(business=business, endpoint_id=hook.pk) is None

    enabled = endpoint_enable(business=business, endpoint_id=hook.pk)
    assert enabled is not None and enabled.is_active and enabled.disabled_reason == ""
    test = endpoint_send_test(business=business, endpoint_id=hook.pk)
    assert test is not None
    assert attempt(test) == "succeeded"
    assert bodies(receiver)[-1]["type"] == "webhook.test"
    assert bodies(receiver)[-1]["data"] == {"endpoint_id": hook.pk, "message": "A test event from bizagent."}


def test_an_endpoint_failing_for_the_whole_window_is_disabled(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    say(business, "hi")
    fan_out_all(business)
    delivery = EndpointDelivery.objects.get(endpoint=hook)
    WebhookEndpoint.objects.filter(pk=hook.pk).update(failing_since=timezone.now() - dt.timedelta(hours=25))
    receiver.answer(502)
    assert attempt(delivery) == "abandoned"
    hook.refresh_from_db()
    assert not hook.is_active and "every attempt has failed since" in hook.disabled_reason


def test_one_business_events_never_reach_another_business_endpoint(receiver: Receiver) -> None:
    a, b = BusinessFactory(), BusinessFactory()
    hook_a = endpoint(a, receiver, path="/a")
    hook_b = endpoint(b, receiver, path="/b")
    say(b, "for b only")
    fan_out_all(b)
    assert EndpointDelivery.objects.filter(endpoint=hook_a).count() == 0
    deliveries = list(EndpointDelivery.objects.order_by("event_id"))
    assert {(d.endpoint_id, d.business_id) for d in deliveries} == {(hook_b.pk, b.pk)}
    assert [attempt(d) for d in deliveries] == ["succeeded", "succeeded"]
    assert {r.path for r in receiver.received} == {"/b"}
    # A's test event is A's: B's endpoint id under A sends nothing.
    assert endpoint_send_test(business=a, endpoint_id=hook_b.pk) is None
    assert endpoint_enable(business=a, endpoint_id=hook_b.pk) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hooks",
        "http://localhost:{port}/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:{port}/hooks",
        "http://[::ffff:127.0.0.1]:{port}/hooks",
        "http://[fe80::1]/hooks",
        "http://0.0.0.0:{port}/hooks",
        "http://100.64.0.1/hooks",
        "http://224.0.0.1/hooks",
        "ftp://example.com/hooks",
        "http://user:pw@127.0.0.1:{port}/hooks",
    ],
)
def test_private_targets_are_refused_when_the_rule_is_on(receiver: Receiver, settings: Any, url: str) -> None:
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    business = BusinessFactory()
    port = receiver.url.rsplit(":", 1)[1]
    with pytest.raises(ValidationError) as refused:
        endpoint_create(business=business, url=url.format(port=port), events=["message.created"])
    assert "cannot receive webhooks" in str(refused.value)
    assert not WebhookEndpoint.objects.exists()
    assert not EventSubscription.objects.exists()


def test_the_rule_is_checked_again_at_each_attempt_and_redirects_are_not_followed(
    receiver: Receiver, settings: Any
) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    say(business, "hi")
    fan_out_all(business)
    delivery = EndpointDelivery.objects.get(endpoint=hook)
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    assert attempt(delivery) == "failed"
    assert receiver.received == []
    log = DeliveryAttempt.objects.get(delivery=delivery)
    assert log.status_code is None
    assert log.error == "refused: the host '127.0.0.1' resolves to 127.0.0.1, which is not a public address"

    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    receiver.answer(302)
    delivery.refresh_from_db()
    assert attempt(delivery, now=delivery.next_attempt_at) == "failed"
    delivery.refresh_from_db()
    assert (delivery.last_status_code, delivery.last_error) == (302, "HTTP 302: redirects are not followed")


def test_the_sweeper_fans_out_lost_events_and_queues_due_deliveries_once(receiver: Receiver) -> None:
    business = BusinessFactory()
    hook = endpoint(business, receiver, events=["message.created"])
    say(business, "lost on its way")
    event = OutboxEvent.objects.get(business=business)
    assert deliveries_sweep() == []  # too recent: its own fan-out task may still come
    later = timezone.now() + dt.timedelta(minutes=1)
    queued = deliveries_sweep(now=later)
    delivery = EndpointDelivery.objects.get(endpoint=hook)
    assert queued == [delivery.pk]
    event.refresh_from_db()
    assert event.fanned_out_at is not None
    assert deliveries_sweep(now=later) == []  # queued once: its next attempt moved on
    assert deliveries_sweep(now=later + REQUEUE_AFTER) == [delivery.pk]  # that task was lost too
