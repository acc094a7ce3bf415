"""The events outbox: what happened to a business, written in the transaction of the change.

This app sits just above ``businesses`` so that every app that changes something a webhook reports
(``catalogs``, ``messaging``) can write its event without importing ``webhooks``, which sits above them all
but the dashboard and fans each event out to its endpoints (docs/webhooks.md, "How events travel").
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from businesses.models import Business


class EventType(models.TextChoices):
    CONVERSATION_CREATED = "conversation.created", "A conversation started"
    MESSAGE_CREATED = "message.created", "A message was stored (customer, agent or staff)"
    HANDOFF_REQUESTED = "handoff.requested", "A conversation was handed to a person"
    CONVERSATION_CLOSED = "conversation.closed", "A conversation was closed"
    IMPORT_FINISHED = "import.finished", "A catalog import finished (succeeded or failed)"
    FEEDBACK_RECEIVED = "feedback.received", "A customer rated a reply or a conversation"
    # Sent to one endpoint on the owner's request; nobody subscribes to it.
    TEST = "webhook.test", "A test event"


SUBSCRIBABLE = [t for t in EventType if t != EventType.TEST]


class OutboxEvent(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="outbox_events")
    # What receivers de-duplicate on (the Bizagent-Event-Id header): not the row id, whose sequence is shared
    # by every business and would tell one how busy the others are.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    # Events with the same non-empty key reach an endpoint in the order of their ids ("conversation:42").
    ordering_key = models.CharField(max_length=60, blank=True, default="")
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when webhooks created the event's deliveries (its claim): the sweeper fans out what is still null.
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweeper's lost events and the ordering check's "an earlier event not fanned out yet": both
            # look only at the few rows not fanned out.
            models.Index(
                fields=["business", "ordering_key", "id"],
                condition=Q(fanned_out_at__isnull=True),
                name="outbox_event_unfanned",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"


class EventSubscription(models.Model):
    """The event types some active endpoint of the business wants, kept by ``webhooks.services`` with its
    endpoints. Emitting asks this table only (one indexed exists-check), so a business without endpoints
    pays one index probe per change and stores nothing."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="event_subscriptions")
    type = models.CharField(max_length=40, choices=EventType.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["business", "type"], name="event_subscription_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.business_id}: {self.type}"
