"""The dispatcher: an outbox event fanned out to its endpoints' deliveries, each delivery attempted by a
worker that claimed it, and the sweeper that picks up what is due or was lost (docs/webhooks.md).

Every step claims its rows with a conditional update, so a task run twice (or queued by both a service and
the sweeper) does its work once:
- fan-out claims the event (``fanned_out_at`` from null) and creates one delivery per subscribed endpoint;
- an attempt claims the delivery for ``attempts`` (the number the queuing side saw: a task left over from an
  earlier attempt finds the count moved on and does nothing), with a lease (``claimed_until``) that another
  worker may take over once it ran out, and records its outcome only while its lease is the one stored.

Order per conversation: a delivery whose event has an ordering key waits while an earlier event with that
key has an open delivery to the same endpoint, or is not fanned out yet. A delivery that finishes (succeeded
or abandoned) queues the next one in its line. No HTTP request is made inside a transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from common import metrics
from common.tasks import enqueue, enqueue_on_commit
from outbox.models import OutboxEvent
from webhooks import policy, sending, signing
from webhooks.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from webhooks.services import endpoint_disable

logger = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "abandoned", "skipped"]

DELIVER_TASK = "webhooks.tasks.deliver"
# The sweeper moves a due delivery's next attempt this far on when it queues it: it is not queued again
# while its task waits in the queue, and is again if that task was lost.
REQUEUE_AFTER = dt.timedelta(minutes=2)
# An event not fanned out this long after it was stored had its publish lost.
LOST_AFTER = dt.timedelta(seconds=30)
SWEEP_LIMIT = 500


def event_body(event: OutboxEvent, business_slug: str) -> bytes:
    """The JSON a receiver gets (and the signature covers), byte for byte."""
    envelope = {
        "id": str(event.public_id),
        "type": event.type,
        "created_at": event.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "business": business_slug,
        "data": event.payload,
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _queue_on_commit(deliveries: list[tuple[int, int]]) -> None:
    for delivery_id, attempts in deliveries:
        enqueue_on_commit(DELIVER_TASK, delivery_id, attempts, robust=True)


def events_fan_out(*, event_id: int) -> list[int]:
    """Create the event's deliveries, one per active endpoint of its business subscribed to its type, and
    queue those that may go now (per endpoint, the first open one of the event's conversation). Returns the
    queued ids; an event fanned out already queues nothing."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        if not OutboxEvent.objects.filter(pk=event_id, fanned_out_at__isnull=True).update(fanned_out_at=now):
            return []
        event = OutboxEvent.objects.get(pk=event_id)
        endpoint_ids = WebhookEndpoint.objects.filter(
            business_id=event.business_id, is_active=True, events__contains=[event.type]
        ).values_list("pk", flat=True)
        EndpointDelivery.objects.bulk_create(
            [
                EndpointDelivery(
                    business_id=event.business_id,
                    event=event,
                    endpoint_id=endpoint_id,
                    ordering_key=event.ordering_key,
                    next_attempt_at=now,
                )
                for endpoint_id in endpoint_ids
            ],
            ignore_conflicts=True,
        )
        if event.ordering_key:
            # The head of each endpoint's line for this key: the only delivery of the line that may go now.
            # Queued when it is this event's, or a later event's that waited for this one to be fanned out;
            # an earlier event's head was queued already, and one that failed keeps its retry time.
            heads = (
                EndpointDelivery.objects.filter(
                    business_id=event.business_id,
                    ordering_key=event.ordering_key,
                    state__in=EndpointDelivery.OPEN,
                )
                .order_by("endpoint_id", "event_id")
                .distinct("endpoint_id")
                .values_list("pk", "event_id", "attempts")
            )
            deliveries = [
                (pk, attempts) for pk, event_id, attempts in heads if attempts == 0 and event_id >= event.pk
            ]
        else:
            deliveries = list(EndpointDelivery.objects.filter(event=event).values_list("pk", "attempts"))
        _queue_on_commit(deliveries)
    return [pk for pk, _ in deliveries]


def _claim(delivery_id: int, attempts: int, now: dt.datetime, lease: dt.datetime) -> bool:
    earlier_open = EndpointDelivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"),
        ordering_key=OuterRef("ordering_key"),
        event_id__lt=OuterRef("event_id"),
        state__in=EndpointDelivery.OPEN,
    )
    earlier_not_fanned_out = OutboxEvent.objects.filter(
        business_id=OuterRef("business_id"),
        ordering_key=OuterRef("ordering_key"),
        pk__lt=OuterRef("event_id"),
        fanned_out_at__isnull=True,
    )
    return (
        EndpointDelivery.objects.filter(pk=delivery_id, state__in=EndpointDelivery.OPEN, attempts=attempts)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(ordering_key="") | (~Exists(earlier_open) & ~Exists(earlier_not_fanned_out)))
        .update(claimed_until=lease)
        == 1
    )


def delivery_attempt(*, delivery_id: int, attempts: int, now: dt.datetime | None = None) -> Outcome:
    """Make attempt ``attempts + 1`` of the delivery, if it is still open at that count, free and not held
    back by an earlier event of its line ("skipped" otherwise), and record it."""
    now = now or timezone.now()
    lease = now + dt.timedelta(seconds=settings.OUTBOUND_WEBHOOK_TIMEOUT * 2 + 30)
    if not _claim(delivery_id, attempts, now, lease):
        return "skipped"
    delivery = EndpointDelivery.objects.select_related("endpoint", "event", "business").get(pk=delivery_id)
    endpoint, event = delivery.endpoint, delivery.event
    if not endpoint.is_active:
        result = sending.PostResult(None, "the endpoint is disabled", "", 0)
    else:
        body = event_body(event, delivery.business.slug)
        headers = {
            "Content-Type": "application/json",
            signing.EVENT_ID_HEADER: str(event.public_id),
            signing.EVENT_TYPE_HEADER: event.type,
            signing.ATTEMPT_HEADER: str(attempts + 1),
            # Wall-clock time, whatever ``now`` says: the receiver compares it with its own clock.
            signing.SIGNATURE_HEADER: signing.signature(endpoint.secret, int(time.time()), body),
        }
        result = sending.post(endpoint.url, body, headers)
    return _record(delivery, result, started_at=now, lease=lease)


def _record(
    delivery: EndpointDelivery, result: sending.PostResult, *, started_at: dt.datetime, lease: dt.datetime
) -> Outcome:
    now = started_at + dt.timedelta(milliseconds=result.duration_ms)
    number = delivery.attempts + 1
    state: Outcome
    next_attempt_at = delivery.next_attempt_at
    if result.ok:
        state = "succeeded"
    elif not delivery.endpoint.is_active:
        state = "abandoned"
    else:
        next_attempt_at = now + policy.retry_delay(number)
        state = "abandoned" if policy.gives_up(delivery.event.created_at, next_attempt_at) else "failed"
    finished = state in ("succeeded", "abandoned")
    with transaction.atomic(durable=True):
        recorded = EndpointDelivery.objects.filter(
            pk=delivery.pk, claimed_until=lease, state__in=EndpointDelivery.OPEN
        ).update(
            state=state,
            attempts=number,
            next_attempt_at=next_attempt_at,
            claimed_until=None,
            last_status_code=result.status_code,
            last_error=result.error[:500],
            finished_at=now if finished else None,
        )
        if not recorded:
            # Our lease ran out and another worker took the delivery over (its attempt is the one that counts),
            # or the endpoint was disabled meanwhile.
            return "skipped"
        DeliveryAttempt.objects.create(
            business_id=delivery.business_id,
            delivery=delivery,
            number=number,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error[:500],
            response_snippet=result.snippet,
        )
        if delivery.endpoint.is_active and _endpoint_disabled_after(delivery, state, result, now):
            state = "abandoned"  # with the endpoint's other open deliveries
        if finished and delivery.ordering_key:
            _queue_on_commit(
                list(
                    EndpointDelivery.objects.filter(
                        endpoint_id=delivery.endpoint_id,
                        ordering_key=delivery.ordering_key,
                        event_id__gt=delivery.event_id,
                        state__in=EndpointDelivery.OPEN,
                    )
                    .order_by("event_id")
                    .values_list("pk", "attempts")[:1]
                )
            )
    metrics.WEBHOOK_DELIVERIES.labels(state).inc()
    return state


def _endpoint_disabled_after(
    delivery: EndpointDelivery, state: Outcome, result: sending.PostResult, now: dt.datetime
) -> bool:
    """Keep the endpoint's failure counts; disable it when the policy says so (True)."""
    endpoints = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if state == "succeeded":
        # Written only when there is something to reset: a healthy endpoint's row is not rewritten per event.
        endpoints.filter(Q(failing_since__isnull=False) | Q(abandoned_in_a_row__gt=0)).update(
            failing_since=None, abandoned_in_a_row=0
        )
        return False
    endpoints.filter(failing_since__isnull=True).update(failing_since=now)
    if state == "abandoned":
        endpoints.update(abandoned_in_a_row=F("abandoned_in_a_row") + 1)
    failing_since, abandoned_in_a_row = endpoints.values_list("failing_since", "abandoned_in_a_row").get()
    reason = policy.disable_reason(
        failing_since=failing_since, abandoned_in_a_row=abandoned_in_a_row, now=now, last_error=result.error
    )
    if not reason:
        return False
    logger.warning("webhook endpoint %s disabled: %s", delivery.endpoint_id, reason)
    endpoint_disable(
        business_id=delivery.business_id, endpoint_id=delivery.endpoint_id, reason=reason, now=now
    )
    return True


def deliveries_sweep(*, now: dt.datetime | None = None) -> list[int]:
    """Fan out the events whose fan-out was lost, and queue the open deliveries that are due and not held
    by a live claim (moving their next attempt on by ``REQUEUE_AFTER``: the sweeper's own claim). Returns
    the queued delivery ids."""
    now = now or timezone.now()
    lost = OutboxEvent.objects.filter(fanned_out_at__isnull=True, created_at__lt=now - LOST_AFTER)
    for event_id in lost.order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT]:
        events_fan_out(event_id=event_id)
    table = connection.ops.quote_name(EndpointDelivery._meta.db_table)
    with connection.cursor() as cursor:
        # SKIP LOCKED: two sweepers at once each queue their own rows.
        cursor.execute(
            f"UPDATE {table} SET next_attempt_at = %s WHERE id IN (SELECT id FROM {table} "
            "WHERE state = ANY(%s) AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s) "
            "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, attempts",
            [now + REQUEUE_AFTER, list(EndpointDelivery.OPEN), now, now, SWEEP_LIMIT],
        )
        due = sorted(cursor.fetchall())
    for delivery_id, attempts in due:
        enqueue(DELIVER_TASK, delivery_id, attempts)
    return [delivery_id for delivery_id, _ in due]
