"""The events messaging reports to webhooks (docs/webhooks.md), written into the outbox by the services in
the transaction of each change (outbox.emit: nothing is stored for a business that no endpoint listens to).
A conversation's events share its ordering key, so each endpoint gets them in order."""

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


def message_created(message: Message) -> None:
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


def handoff_requested(*, business_id: int, conversation_id: int, channel: str, reason: str) -> None:
    event_emit(
        business_id=business_id,
        type=EventType.HANDOFF_REQUESTED,
        data={"conversation_id": conversation_id, "channel": channel, "reason": reason},
        ordering_key=conversation_key(conversation_id),
    )


def feedback_received(*, business_id: int, data: FeedbackData) -> None:
    event_emit(
        business_id=business_id,
        type=EventType.FEEDBACK_RECEIVED,
        data=data,
        ordering_key=conversation_key(data["conversation_id"]),
    )
