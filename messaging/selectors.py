"""Reads for conversations and messages. Every function takes the business first."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from businesses.models import Business
from messaging.models import Channel, Contact, Conversation, Message

HISTORY_LIMIT = 50


def message_payload(message: Message) -> dict[str, Any]:
    """A message as the websocket protocol sends it (docs/websocket-protocol.md)."""
    return {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "client_id": message.client_message_id,
        "cards": message.cards,
        "created_at": message.created_at.isoformat(),
    }


def visitor_contact(business: Business, visitor_id: str) -> Contact | None:
    return Contact.objects.filter(business=business, channel=Channel.WIDGET, external_id=visitor_id).first()


def visitor_conversation(
    business: Business, visitor_id: str, conversation_id: int | None = None
) -> Conversation | None:
    """The visitor's conversation with that id, or its latest open one; never another visitor's."""
    qs = Conversation.objects.filter(
        business=business, channel=Channel.WIDGET, contact__external_id=visitor_id
    ).select_related("contact")
    if conversation_id is not None:
        return qs.filter(pk=conversation_id).first()
    return qs.exclude(state=Conversation.State.CLOSED).order_by("-created_at").first()


def conversation_history(
    business: Business, conversation_id: int, visitor: str | None = None, *, limit: int = HISTORY_LIMIT
) -> list[Message]:
    """The last ``limit`` messages of a conversation, oldest first. With ``visitor`` (a widget visitor id),
    only when the conversation is that visitor's: otherwise an empty list."""
    qs = Message.objects.filter(business=business, conversation_id=conversation_id)
    if visitor is not None:
        qs = qs.filter(conversation__channel=Channel.WIDGET, conversation__contact__external_id=visitor)
    # Failed replies with nothing said are invisible to the customer.
    qs = qs.exclude(role=Message.Role.AGENT, status=Message.Status.FAILED, text="")
    return list(reversed(qs.order_by("-created_at", "-pk")[:limit]))


def conversations_list(business: Business, *, state: str | None = None) -> QuerySet[Conversation]:
    """The business's conversations, most recently active first (the admin inbox)."""
    qs = Conversation.objects.filter(business=business).select_related("contact").order_by("-updated_at")
    return qs.filter(state=state) if state else qs


def streaming_replies(business: Business, conversation_id: int) -> list[Message]:
    """Agent replies of the conversation still being streamed (a reconnecting client resumes them)."""
    return list(
        Message.objects.filter(
            business=business,
            conversation_id=conversation_id,
            role=Message.Role.AGENT,
            status=Message.Status.STREAMING,
        ).order_by("pk")
    )


def conversation_window(conversation_id: int, *, limit: int = 60) -> list[Message]:
    """The conversation's latest ``limit`` messages, oldest first: what a reply reads (the questions of a
    burst, the turns before them, the latest failures)."""
    # Only what a reply reads: the JSON columns of 60 rows would cost more to load than the query itself.
    window = (
        Message.objects.filter(conversation_id=conversation_id)
        .only("id", "conversation_id", "role", "status", "text", "grounding")
        .order_by("-pk")[:limit]
    )
    return list(reversed(window))


def context_turns(messages: list[Message], *, limit: int = 12) -> list[Message]:
    """The last ``limit`` of ``messages`` (oldest first) that a reply reads as context."""
    said = [m for m in messages if m.text and m.status != Message.Status.FAILED]
    return said[-limit:]


def failures_in_a_row(messages: list[Message], *, limit: int = 10) -> int:
    """How many of the agent's latest replies among ``messages`` (oldest first) in a row failed, were cut or
    found nothing."""
    count = 0
    for message in [m for m in reversed(messages) if m.role in ("agent", "staff")][:limit]:
        failed = message.role == Message.Role.AGENT and (
            message.status in (Message.Status.FAILED, Message.Status.CUT)
            or bool(message.grounding.get("no_results"))
        )
        if not failed:
            break
        count += 1
    return count
