"""The events messaging reports to webhooks (docs/webhooks.md), written into the outbox by the services in
the transaction of each change (outbox.emit: nothing is stored for a business that no endpoint listens to).
A conversation's events share its ordering key, so each endpoint gets them in order.

The owner's playground (``Conversation.preview``) is no customer's conversation: nothing in it is reported.
Each function here decides that itself, so that no caller can forget it, from what its callers already hold:
the conversation, a message with its conversation loaded, or the flag read by the statement that stored the
message."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from messaging.models import Conversation, Message
from outbox.emit import conversation_key, event_emit
from outbox.models import EventType
from outbox.payloads import FeedbackData


def _iso(moment: dt.datetime | None) -> str:
    return (moment or timezone.now()).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def conversation_event(conversation: Conversation, type: EventType) -> None:
    """conversation.created or conversation.closed."""
    if conversation.preview:
        return
    event_emit(
        business_id=conversation.business_id,
        type=type,
        data={
            "conversation_id": conversation.pk,
            "channel": conversation.channel,
            "contact_id": conversation.contact_id,
            "state": conversation.state,
        },
        ordering_key=conversation_key(conversation.pk),
    )


def message_created(message: Message, *, preview: bool | None = None) -> None:
    """message.created. ``preview``: whether the message's conversation is the playground's, from a caller
    that knows without the conversation (the one-statement insert of ``services.message_receive``); by
    default ``message.conversation``, which every other caller has loaded."""
    if message.conversation.preview if preview is None else preview:
        return
    event_emit(
        business_id=message.business_id,
        type=EventType.MESSAGE_CREATED,
        data={
            "conversation_id": message.conversation_id,
            "message_id": message.pk,
            "channel": message.channel,
            "role": message.role,
            "text": message.text,
            "status": message.status,
            "created_at": _iso(message.created_at),
        },
        ordering_key=conversation_key(message.conversation_id),
    )


def handoff_requested(conversation: Conversation, reason: str) -> None:
    if conversation.preview:
        return
    event_emit(
        business_id=conversation.business_id,
        type=EventType.HANDOFF_REQUESTED,
        data={"conversation_id": conversation.pk, "channel": conversation.channel, "reason": reason},
        ordering_key=conversation_key(conversation.pk),
    )


def feedback_received(conversation: Conversation, data: FeedbackData) -> None:
    """feedback.received; ``data`` names ``conversation``."""
    if conversation.preview:
        return
    event_emit(
        business_id=conversation.business_id,
        type=EventType.FEEDBACK_RECEIVED,
        data=data,
        ordering_key=conversation_key(conversation.pk),
    )
