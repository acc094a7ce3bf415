"""Reads for conversations and messages. Every function takes the business first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from businesses.models import Business
from messaging.events import MediaPayload, MessagePayload
from messaging.models import Channel, Contact, Conversation, Message, MessageMedia

HISTORY_LIMIT = 50
# The text a customer message stands as when it holds no words: a photo or voice note without a caption, a type
# we cannot read ("[image]", "[audio]", "[sticker]").
PLACEHOLDER_TEXT = r"^\[[a-z_]+\]$"


def message_payload(message: Message, media: Iterable[MessageMedia] = ()) -> MessagePayload:
    """A message as the websocket protocol sends it (docs/websocket-protocol.md); ``media``: the photos or voice
    notes it carried, when the caller has them (history prefetches them; a reply never carries any)."""
    payload: MessagePayload = {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "client_id": message.client_message_id,
        "cards": message.cards,
        "created_at": message.created_at.isoformat(),
    }
    if message.disclosure:
        payload["disclosure"] = message.disclosure
    if message.rating:
        payload["rating"] = message.rating
    carried: list[MediaPayload] = [{"kind": row.kind, "caption": row.caption} for row in media]
    if carried:
        payload["media"] = carried
    return payload


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


def visitor_message(business: Business, visitor_id: str, client_message_id: str) -> Message:
    """The widget visitor's latest message sent with this client id (a retried upload's stored one); raises
    ``Message.DoesNotExist`` when there is none."""
    return Message.objects.filter(
        business=business,
        channel=Channel.WIDGET,
        role=Message.Role.CUSTOMER,
        client_message_id=client_message_id,
        conversation__contact__external_id=visitor_id,
    ).latest("pk")


def csat_unasked(business: Business, visitor_id: str, within: dt.timedelta) -> int | None:
    """The visitor's latest conversation closed within ``within`` whose "How did we do?" never reached them
    (no widget was open when it closed), if it is their latest conversation and had an agent's or staff's
    answer; else None."""
    latest = (
        Conversation.objects.filter(
            business=business, channel=Channel.WIDGET, contact__external_id=visitor_id
        )
        .order_by("-created_at", "-pk")
        .values("pk", "state", "closed_at", "csat_asked_at", "csat_score")
        .first()
    )
    if (
        latest is None
        or latest["state"] != Conversation.State.CLOSED
        or latest["csat_asked_at"] is not None
        or latest["csat_score"] is not None
        or latest["closed_at"] is None
        or latest["closed_at"] < timezone.now() - within
    ):
        return None
    answered = Message.objects.filter(
        business=business, conversation_id=latest["pk"], role__in=[Message.Role.AGENT, Message.Role.STAFF]
    ).exists()
    return int(latest["pk"]) if answered else None


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
    return list(reversed(qs.order_by("-created_at", "-pk").prefetch_related("media")[:limit]))


def conversations_list(
    business: Business, *, state: str | None = None, channel: str | None = None
) -> QuerySet[Conversation]:
    """The business's conversations, most recently active first."""
    qs = (
        Conversation.objects.filter(business=business)
        .select_related("contact")
        .order_by("-updated_at", "-pk")
    )
    if channel:
        qs = qs.filter(channel=channel)
    return qs.filter(state=state) if state else qs


def conversation_of(business: Business, conversation_id: int) -> Conversation | None:
    return conversations_list(business).filter(pk=conversation_id).first()


def conversation_messages(business: Business, conversation_id: int) -> QuerySet[Message]:
    """Every message of the conversation, oldest first (the customer's, the agent's, staff's), with the photos
    and voice notes a customer's carries."""
    return (
        Message.objects.filter(business=business, conversation_id=conversation_id)
        .order_by("pk")
        .prefetch_related("media")
    )


def last_customer_text(conversation_id: int, *, before: int | None = None) -> str:
    """The text of the customer's last message in the conversation (before message ``before``), "" when there
    is none: the customer's own words, whose language a fixed reply follows. A placeholder for media or a type
    we cannot read (``[image]``, ``[sticker]``) holds no words and is passed over."""
    messages = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.CUSTOMER).exclude(
        text__regex=PLACEHOLDER_TEXT
    )
    if before is not None:
        messages = messages.filter(pk__lt=before)
    return messages.order_by("-pk").values_list("text", flat=True).first() or ""


def contacts_list(business: Business, *, channel: str | None = None) -> QuerySet[Contact]:
    """The business's contacts (one per identity on a channel), newest first."""
    qs = Contact.objects.filter(business=business).order_by("-pk")
    return qs.filter(channel=channel) if channel else qs


def contact_of(business: Business, contact_id: int) -> Contact | None:
    return contacts_list(business).filter(pk=contact_id).first()


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


@dataclass(frozen=True, slots=True)
class WindowMessage:
    """What a reply reads of each message of its conversation's window: no model instance (a window is up to
    60 rows on every reply's way to its first token)."""

    pk: int
    role: str
    status: str
    text: str
    no_results: bool  # an agent reply that found nothing to ground on
    created_at: dt.datetime  # when a long gap came before a question (messaging.disclosure)


WINDOW_LIMIT = 60
# Newest first; the caller reverses. The window's one JSON fact is read by the database, not decoded here.
WINDOW_SQL = (
    f"SELECT id, role, status, text, COALESCE((grounding -> 'no_results') = 'true'::jsonb, false), created_at "
    f"FROM {Message._meta.db_table} WHERE conversation_id = %s ORDER BY id DESC LIMIT {WINDOW_LIMIT}"
)


def window_rows(rows: list[tuple[Any, ...]]) -> list[WindowMessage]:
    """``WINDOW_SQL``'s rows, oldest first."""
    return [WindowMessage(*row) for row in reversed(rows)]


def conversation_window(conversation_id: int) -> list[WindowMessage]:
    """The conversation's latest ``WINDOW_LIMIT`` messages, oldest first: what a reply reads (the questions
    of a burst, the turns before them, the latest failures)."""
    with connection.cursor() as cursor:
        cursor.execute(WINDOW_SQL, [conversation_id])
        return window_rows(cursor.fetchall())


def context_turns(messages: list[WindowMessage], *, limit: int = 12) -> list[WindowMessage]:
    """The last ``limit`` of ``messages`` (oldest first) that a reply reads as context."""
    said = [m for m in messages if m.text and m.status != Message.Status.FAILED]
    return said[-limit:]


def failures_in_a_row(messages: list[WindowMessage], *, limit: int = 10) -> int:
    """How many of the agent's latest replies among ``messages`` (oldest first) in a row failed, were cut or
    found nothing."""
    count = 0
    for message in [m for m in reversed(messages) if m.role in ("agent", "staff")][:limit]:
        failed = message.role == Message.Role.AGENT and (
            message.status in (Message.Status.FAILED, Message.Status.CUT) or message.no_results
        )
        if not failed:
            break
        count += 1
    return count
