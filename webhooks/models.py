"""Outbound webhooks: the endpoints a business registers, one delivery per (event, endpoint), and every
attempt of each delivery (docs/webhooks.md)."""

from __future__ import annotations

import secrets

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from businesses.crypto import EncryptedTextField
from businesses.models import Business
from outbox.models import EventType, OutboxEvent


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    events = ArrayField(models.CharField(max_length=40, choices=EventType.choices))
    # Shown once, when the endpoint is created; kept (encrypted) because every delivery is signed with it.
    secret = EncryptedTextField(default=new_signing_secret)
    is_active = models.BooleanField(default=True)
    # Why it was disabled (shown in the admin until the owner enables it again).
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # The disabling rules (webhooks.policy): when the current run of failed attempts began, and how many
    # deliveries in a row were abandoned; a successful attempt resets both.
    failing_since = models.DateTimeField(null=True, blank=True)
    abandoned_in_a_row = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["business", "is_active"], name="webhook_endpoint_business")]

    def __str__(self) -> str:
        return self.url


class EndpointDelivery(models.Model):
    """One event for one endpoint. Open (``pending``, or ``failed`` and due again at ``next_attempt_at``)
    until it ``succeeded`` or was ``abandoned``."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        FAILED = "failed", "Failed, will retry"
        SUCCEEDED = "succeeded", "Succeeded"
        ABANDONED = "abandoned", "Abandoned"

    OPEN = (State.PENDING, State.FAILED)

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="endpoint_deliveries")
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # The event's, copied so that the ordering check reads one table.
    ordering_key = models.CharField(max_length=60, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # The claim of the worker sending it (a conditional update sets it); past it, another may take over.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="endpoint_delivery_once"),
        ]
        indexes = [
            # The sweeper's due deliveries.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state__in=["pending", "failed"]),
                name="endpoint_delivery_due",
            ),
            # The ordering check: an open delivery of an earlier event with the same key to the same endpoint.
            models.Index(
                fields=["endpoint", "ordering_key", "event"],
                condition=Q(state__in=["pending", "failed"]),
                name="endpoint_delivery_in_line",
            ),
            models.Index(fields=["endpoint", "-created_at"], name="endpoint_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.state})"


class DeliveryAttempt(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="delivery_attempts")
    delivery = models.ForeignKey(EndpointDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # A transport error, a refused address, or "HTTP 500"; empty on success.
    error = models.CharField(max_length=500, blank=True)
    # The start of the receiver's answer, for the owner debugging their endpoint.
    response_snippet = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="delivery_attempt_once"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
