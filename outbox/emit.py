"""Writing an event into the outbox, in the transaction of the change it reports.

The outbox pattern: the event row commits or rolls back with the change, so a receiver never hears of a
message that was not stored, nor misses one that was. On commit, ``webhooks.tasks.fan_out`` is queued by
name (webhooks sits above every app that emits); a lost publish is picked up by the webhooks sweeper.
"""

from __future__ import annotations

from django.db import connection

from common.tasks import enqueue_on_commit
from outbox.models import EventSubscription, EventType, OutboxEvent
from outbox.payloads import EventData


def conversation_key(conversation_id: int) -> str:
    """The ordering key of a conversation's events: they reach each endpoint one after the other."""
    return f"conversation:{conversation_id}"


def event_emit(
    *, business_id: int, type: EventType, data: EventData, ordering_key: str = ""
) -> OutboxEvent | None:
    """Store the event if an active endpoint of the business subscribes to ``type`` (else None, and one
    indexed exists-check was all it cost). Must run inside the transaction of the change it reports."""
    if not connection.in_atomic_block:
        raise RuntimeError("event_emit must run in the transaction of the change it reports")
    if not EventSubscription.objects.filter(business_id=business_id, type=type).exists():
        return None
    event = OutboxEvent.objects.create(
        business_id=business_id, type=type, payload=data, ordering_key=ordering_key
    )
    # robust: the event row is its own outbox; the sweeper fans out what a failed publish left behind.
    enqueue_on_commit("webhooks.tasks.fan_out", event.pk, robust=True)
    return event
