"""Who talks to a business (Contact), their threads (Conversation) and every message in them."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from businesses.models import Business


class Channel(models.TextChoices):
    WIDGET = "widget", "Web widget"
    WHATSAPP = "whatsapp", "WhatsApp"
    MESSENGER = "messenger", "Messenger"
    INSTAGRAM = "instagram", "Instagram"


class Contact(models.Model):
    """One identity on one channel: a widget visitor id, a WhatsApp wa_id or BSUID, a Messenger PSID, an IGSID."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="contacts")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    external_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["business", "channel", "external_id"], name="contact_unique_identity")
        ]

    def __str__(self) -> str:
        return self.name or f"{self.channel}:{self.external_id}"


class Conversation(models.Model):
    class State(models.TextChoices):
        BOT = "bot", "Agent answers"
        HUMAN = "human", "Staff answers"
        CLOSED = "closed", "Closed"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="conversations")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.BOT)
    handoff_reason = models.CharField(max_length=200, blank=True)
    last_customer_message_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["business", "-updated_at"], name="conversation_recent")]

    def __str__(self) -> str:
        return f"Conversation {self.pk} ({self.channel}, {self.state})"

    @property
    def group_name(self) -> str:
        """The Channels group that carries this conversation's live events."""
        return f"conv.{self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AGENT = "agent", "Agent"
        STAFF = "staff", "Staff"

    class Status(models.TextChoices):
        # customer messages: received -> answered (or skipped when a human has the conversation)
        RECEIVED = "received", "Received"
        ANSWERED = "answered", "Answered"
        SKIPPED = "skipped", "Skipped"
        # agent and staff messages
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        CUT = "cut", "Cut off"
        FAILED = "failed", "Failed"

    class Delivery(models.TextChoices):
        # outbound delivery on messaging channels; only ever moves forward (failed is final)
        NONE = "", "-"
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED = "failed", "Failed"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    # The platform's id (WhatsApp wamid, Messenger mid): Meta redelivers for days, this de-duplicates.
    channel_message_id = models.CharField(max_length=255, blank=True)
    # The widget's own id for a message it sent, so that a resend after a reconnect is not stored twice.
    client_message_id = models.CharField(max_length=64, blank=True)
    # For agent replies: the customer message that triggered the reply (the reply task is keyed by it).
    reply_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reply"
    )
    # Reply claim: set by a conditional update; a stale lease can be taken over after a worker crash.
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    citations = models.JSONField(default=list, blank=True)
    cards = models.JSONField(default=list, blank=True)
    grounding = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    delivery = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.NONE, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "channel_message_id"],
                condition=~Q(channel_message_id=""),
                name="message_unique_channel_id",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=~Q(client_message_id=""),
                name="message_unique_client_id",
            ),
        ]
        indexes = [models.Index(fields=["conversation", "created_at"], name="message_thread")]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"
