"""Writes for webhook endpoints. Every function takes the business first.

The business's ``outbox.EventSubscription`` rows are kept equal to the event types of its active endpoints,
in the same transaction as each endpoint write, under the business's row lock: emitting an event asks only
that table (outbox.emit), so it must never lag behind an endpoint.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from businesses.models import Business
from common.tasks import enqueue_on_commit
from outbox.models import SUBSCRIBABLE, EventSubscription, EventType, OutboxEvent
from outbox.payloads import TestData
from webhooks.models import EndpointDelivery, WebhookEndpoint
from webhooks.targets import TargetRefused, resolve

MAX_ENDPOINTS = 20


def _subscriptions_sync(business_id: int) -> None:
    wanted: set[str] = set()
    for events in WebhookEndpoint.objects.filter(business_id=business_id, is_active=True).values_list(
        "events", flat=True
    ):
        wanted.update(events)
    EventSubscription.objects.filter(business_id=business_id).exclude(type__in=wanted).delete()
    EventSubscription.objects.bulk_create(
        [EventSubscription(business_id=business_id, type=t) for t in sorted(wanted)], ignore_conflicts=True
    )


def _lock(business_id: int) -> None:
    # Serialises the endpoint writes of one business, so that two of them cannot leave the subscriptions
    # out of step with the endpoints.
    Business.objects.select_for_update().filter(pk=business_id).first()


def endpoint_validate(*, url: str, events: list[str]) -> None:
    """Raise ``ValidationError`` (by field) for a URL the address rule refuses or unknown event types."""
    errors: dict[str, str] = {}
    try:
        resolve(url)
    except TargetRefused as exc:
        errors["url"] = f"This URL cannot receive webhooks: {exc}."
    if not events:
        errors["events"] = "Choose at least one event."
    elif unknown := sorted(set(events) - set(SUBSCRIBABLE)):
        errors["events"] = f"Unknown event types: {', '.join(unknown)}."
    if errors:
        raise ValidationError(errors)


def endpoint_create(
    *, business: Business, url: str, events: list[str], description: str = ""
) -> WebhookEndpoint:
    """A new active endpoint with a new signing secret (``endpoint.secret``: show it once). Raises
    ``ValidationError``."""
    endpoint_validate(url=url, events=events)
    with transaction.atomic(durable=True):
        _lock(business.pk)
        if WebhookEndpoint.objects.filter(business=business).count() >= MAX_ENDPOINTS:
            raise ValidationError(f"A business may have at most {MAX_ENDPOINTS} endpoints.")
        endpoint = WebhookEndpoint.objects.create(
            business=business, url=url, events=sorted(set(events)), description=description[:200]
        )
        _subscriptions_sync(business.pk)
    return endpoint


def endpoint_enable(*, business: Business, endpoint_id: int) -> WebhookEndpoint | None:
    """The owner turns a disabled endpoint on again: it gets the events emitted from now on, with its
    failure counts reset. None when the endpoint is not this business's."""
    with transaction.atomic(durable=True):
        _lock(business.pk)
        updated = WebhookEndpoint.objects.filter(business=business, pk=endpoint_id).update(
            is_active=True, disabled_reason="", disabled_at=None, failing_since=None, abandoned_in_a_row=0
        )
        if not updated:
            return None
        _subscriptions_sync(business.pk)
    return WebhookEndpoint.objects.get(pk=endpoint_id)


DISABLED_ERROR = "the endpoint was disabled"


def endpoint_disable(*, business_id: int, endpoint_id: int, reason: str, now: dt.datetime) -> None:
    """Disable the endpoint and abandon its open deliveries (in the caller's transaction when there is
    one: the dispatcher disables in the transaction that records the attempt that decided it)."""
    with transaction.atomic():
        _lock(business_id)
        WebhookEndpoint.objects.filter(business_id=business_id, pk=endpoint_id).update(
            is_active=False, disabled_reason=reason[:300], disabled_at=now
        )
        EndpointDelivery.objects.filter(
            business_id=business_id, endpoint_id=endpoint_id, state__in=EndpointDelivery.OPEN
        ).update(state=EndpointDelivery.State.ABANDONED, last_error=DISABLED_ERROR, finished_at=now)
        _subscriptions_sync(business_id)


def endpoint_delete(*, business: Business, endpoint_id: int) -> bool:
    """Delete the endpoint with its deliveries and their attempts; False when it is not this business's."""
    with transaction.atomic(durable=True):
        _lock(business.pk)
        deleted, _ = WebhookEndpoint.objects.filter(business=business, pk=endpoint_id).delete()
        _subscriptions_sync(business.pk)
    return bool(deleted)


def endpoint_send_test(*, business: Business, endpoint_id: int) -> EndpointDelivery | None:
    """Queue a ``webhook.test`` event to this one active endpoint (its subscriptions do not matter). None
    when the endpoint is not this business's or is disabled."""
    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.filter(business=business, pk=endpoint_id, is_active=True).first()
        if endpoint is None:
            return None
        now = timezone.now()
        data: TestData = {"endpoint_id": endpoint.pk, "message": "A test event from bizagent."}
        # Born fanned out: it is for this endpoint only.
        event = OutboxEvent.objects.create(
            business=business, type=EventType.TEST, payload=data, fanned_out_at=now
        )
        delivery = EndpointDelivery.objects.create(
            business=business, event=event, endpoint=endpoint, next_attempt_at=now
        )
        enqueue_on_commit("webhooks.tasks.deliver", delivery.pk, 0)
    return delivery
