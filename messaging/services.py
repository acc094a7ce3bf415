"""Writes for conversations and messages. Every function takes the business first.

Side effects (the reply task, channel-layer broadcasts, outbound sends) run on commit, never before the
rows they name exist for other processes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_for
from businesses.models import Business
from common.tasks import enqueue_on_commit
from messaging import outbox_events, rows
from messaging.disclosure import fixed_reply_disclosure
from messaging.events import ConversationEvent
from messaging.meta import rating
from messaging.models import (
    RATING_COMMENT_MAX_CHARS,
    Channel,
    Contact,
    Conversation,
    Message,
    conversation_group,
)
from messaging.replies import policy
from messaging.selectors import last_customer_text, message_payload
from outbox.models import EventType

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=models.Model)


def group_send(group: str, event: ConversationEvent) -> None:
    """Broadcast to a conversation's group from sync code (a service's on-commit hook)."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, event)


def enqueue_outbound(message_id: int) -> None:
    """Send an agent or staff message on its messaging channel, once the current transaction commits."""
    enqueue_on_commit("messaging.meta.tasks.send_message", message_id)


def _contact(business: Business, channel: str, external_id: str, name: str) -> Contact:
    contact, created = Contact.objects.get_or_create(
        business=business, channel=channel, external_id=external_id, defaults={"name": name[:200]}
    )
    if not created and name and contact.name != name[:200]:
        contact.name = name[:200]
        contact.save(update_fields=["name"])
    return contact


IDENTITY_FIELDS = {"name": "name", "email": "email", "phone": "phone", "external_id": "reference"}


def contact_identify(*, business: Business, visitor_id: str, details: dict[str, Any]) -> Contact | None:
    """Keep what a widget visitor said of itself (``identify({name, email, phone, external_id})``) on its
    contact, for the inbox. Unknown keys, non-strings and an invalid email are dropped; None when nothing
    usable was given (no contact is created for an anonymous visitor)."""
    values: dict[str, str] = {}
    for key, field in IDENTITY_FIELDS.items():
        value = details.get(key)
        if isinstance(value, str) and value.strip():
            values[field] = " ".join(value.split())[:200]
    if "email" in values:
        try:
            validate_email(values["email"])
        except ValidationError:
            del values["email"]
    if not values:
        return None
    contact, _ = Contact.objects.update_or_create(
        business=business, channel=Channel.WIDGET, external_id=visitor_id, defaults=values
    )
    return contact


def conversation_open(
    *,
    business: Business,
    channel: str,
    contact_external_id: str,
    contact_name: str = "",
    preview: bool = False,
) -> Conversation:
    """The contact's open conversation on this channel, created (with the contact) when there is none;
    ``preview``: a new one is the playground's (answered with the agent's draft)."""
    # No savepoint inside a caller's transaction (message_receive): a failure here fails it all anyway.
    with transaction.atomic(savepoint=False):
        contact = _contact(business, channel, contact_external_id, contact_name)
        # The contact row serialises two first messages racing to open a conversation.
        Contact.objects.select_for_update().filter(pk=contact.pk).first()
        conversation = (
            Conversation.objects.filter(business=business, contact=contact, channel=channel)
            .exclude(state=Conversation.State.CLOSED)
            .order_by("-created_at")
            .first()
        )
        if conversation is None:
            conversation = Conversation.objects.create(
                business=business, contact=contact, channel=channel, preview=preview
            )
            outbox_events.conversation_event(conversation, EventType.CONVERSATION_CREATED)
    return conversation


def message_receive(
    *,
    business: Business,
    channel: str,
    contact_external_id: str,
    text: str,
    channel_message_id: str = "",
    client_message_id: str = "",
    contact_name: str = "",
    received_at: dt.datetime | None = None,
    conversation_id: int | None = None,
    query_vector_token: str | None = None,
    preview: bool = False,
) -> Message | None:
    """Store a customer's message and, when the agent has the conversation, queue its reply on commit.
    The message row is the reply's outbox (``reply_due_at``, written with it): a publish that fails is
    logged, and the sweeper queues the reply again (messaging.replies.policy).

    Idempotent: a message whose ``channel_message_id`` (per channel) or ``client_message_id`` (per
    conversation) is already stored returns None and queues nothing. In ``human`` state the message is
    stored as ``skipped``: staff answer it.

    ``conversation_id``: the contact's conversation as the caller knows it (an open chat socket). While it is
    theirs and open, the message goes straight into it, in two statements without a transaction; otherwise
    the contact's open conversation is looked up (or created) under the contact's row lock.

    ``query_vector_token``: the caller will hand the question's vector over under it (messaging.query_vectors).
    ``preview``: a conversation opened for it is the playground's (``conversation_open``).
    """
    received_at = received_at or timezone.now()
    message = Message(
        business=business,
        channel=channel,
        role=Message.Role.CUSTOMER,
        text=text,
        status=Message.Status.RECEIVED,
        channel_message_id=channel_message_id,
        client_message_id=client_message_id,
        reply_due_at=policy.reply_due_at(timezone.now(), _burst_wait(channel)),
    )
    if conversation_id is not None:
        message.conversation_id = conversation_id
        # A transaction only for the webhook event (outbox.emit: an exists-check when nobody listens),
        # which must commit with the message.
        with transaction.atomic():
            in_preview = _insert_into_open_conversation(message, contact_external_id, received_at)
            if in_preview is not None:
                outbox_events.message_created(message, preview=in_preview)
        if in_preview is not None:
            _queue_reply(message, query_vector_token)
            return message
    with transaction.atomic(durable=True):
        conversation = conversation_open(
            business=business,
            channel=channel,
            contact_external_id=contact_external_id,
            contact_name=contact_name,
            preview=preview,
        )
        message.conversation = conversation
        if conversation.state != Conversation.State.BOT:
            message.status = Message.Status.SKIPPED
        try:
            with transaction.atomic():  # a savepoint: a duplicate must not undo the conversation just opened
                message.save(force_insert=True)
        except IntegrityError:
            return None
        outbox_events.message_created(message)
        return _message_received(message, received_at, query_vector_token)


def _insert_into_open_conversation(
    message: Message, contact_external_id: str, received_at: dt.datetime
) -> bool | None:
    """Insert the unsaved customer ``message`` in one statement, without a transaction, if its conversation
    is this contact's, this business's and open; its status follows the conversation's state, and the same
    statement notes when the customer last wrote and reads whether the conversation is the playground's
    (``Conversation.preview``), which is returned. None when it is not, or for a duplicate: the caller takes
    the long way, which tells the two apart."""
    insert, params = rows.insert_select(
        message,
        expressions={
            "status": f"CASE WHEN c.state = '{Conversation.State.BOT}' THEN '{Message.Status.RECEIVED}' "
            f"ELSE '{Message.Status.SKIPPED}' END"
        },
    )
    conversations = connection.ops.quote_name(Conversation._meta.db_table)
    contacts = connection.ops.quote_name(Contact._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH inserted AS ({insert} FROM {conversations} c JOIN {contacts} ct ON ct.id = c.contact_id "
            "WHERE c.id = %s AND c.business_id = %s AND c.channel = %s AND ct.external_id = %s "
            "AND c.state <> %s ON CONFLICT DO NOTHING RETURNING id, status, conversation_id), "
            f"touched AS (UPDATE {conversations} SET last_customer_message_at = %s, updated_at = %s "
            "WHERE id = %s AND EXISTS (SELECT 1 FROM inserted) "
            "AND (last_customer_message_at IS NULL OR last_customer_message_at < %s)) "
            f"SELECT i.id, i.status, c.preview FROM inserted i JOIN {conversations} c ON c.id = i.conversation_id",
            [
                *params,
                message.conversation_id,
                message.business_id,
                message.channel,
                contact_external_id,
                Conversation.State.CLOSED,
                received_at,
                timezone.now(),
                message.conversation_id,
                received_at,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    message.pk, message.status, preview = row
    rows.stored(message)
    return bool(preview)


def _burst_wait(channel: str) -> float:
    return (
        settings.WIDGET_BURST_WAIT_SECONDS if channel == Channel.WIDGET else settings.REPLY_BURST_WAIT_SECONDS
    )


def _queue_reply(message: Message, query_vector_token: str | None = None) -> None:
    """Queue the reply when the agent has the conversation, after the channel's burst wait."""
    if message.status != Message.Status.RECEIVED:
        return
    reply_enqueue(message=message, wait=_burst_wait(message.channel), query_vector_token=query_vector_token)


def reply_enqueue(*, message: Message, wait: float = 0.0, query_vector_token: str | None = None) -> None:
    """Queue the reply task of the customer ``message`` (on commit: at once outside a transaction).

    ``queued_at`` is when the task may start (after the burst wait), so that the reply's queue_wait timing
    excludes the burst wait; the message's conversation, business and text travel with the task (the reply
    takes its lock and starts retrieval without a query). A failed publish is logged, not raised: the
    message is stored, and the sweeper queues its reply again once ``reply_due_at`` has passed."""
    enqueue_on_commit(
        "messaging.tasks.reply",
        message.pk,
        time.time() + wait,
        countdown=wait,
        robust=True,
        conversation_id=message.conversation_id,
        business_id=message.business_id,
        text=message.text,
        **({"query_vector_token": query_vector_token} if query_vector_token else {}),
    )


def _message_received(
    message: Message, received_at: dt.datetime, query_vector_token: str | None = None
) -> Message:
    """Queue the reply (on commit), and note when the customer last wrote."""
    _queue_reply(message, query_vector_token)
    conversation_customer_wrote(conversation_id=message.conversation_id, at=received_at)
    return message


def conversation_customer_wrote(*, conversation_id: int, at: dt.datetime) -> None:
    """Note when the customer last wrote (the platforms' reply window counts from it); never moves back."""
    Conversation.objects.filter(pk=conversation_id).filter(
        Q(last_customer_message_at__isnull=True) | Q(last_customer_message_at__lt=at)
    ).update(last_customer_message_at=at, updated_at=timezone.now())


def fixed_reply_send(
    *,
    conversation: Conversation,
    customer: Message,
    text: str,
    language_hint: str = "",
    agent: Agent | None = None,
) -> Message:
    """Answer ``customer`` with a note our code wrote (a message the agent cannot read, media it could not
    open, an order's acknowledgement): stored as the agent's reply, with the AI disclosure when one is due (in
    the language of ``language_hint``, the customer's words the note follows; ``agent``: its settings, when the
    caller has them), and sent on commit (a messaging channel's send task; the widget's socket). Call inside the
    transaction that settles ``customer``."""
    note = Message.objects.create(
        business_id=conversation.business_id,
        conversation=conversation,
        channel=conversation.channel,
        role=Message.Role.AGENT,
        text=text,
        disclosure=fixed_reply_disclosure(conversation, customer, agent, language_hint=language_hint),
        status=Message.Status.DONE,
        reply_to=customer,
        delivery=Message.Delivery.NONE if conversation.channel == Channel.WIDGET else Message.Delivery.QUEUED,
    )
    if note.disclosure:
        Conversation.objects.filter(pk=conversation.pk).update(disclosed_at=note.created_at)
    if conversation.channel == Channel.WIDGET:
        transaction.on_commit(lambda: _broadcast_created(note))
    else:
        enqueue_outbound(note.pk)
    return note


def _broadcast_created(message: Message) -> None:
    group_send(
        conversation_group(message.conversation_id),
        {"type": "message.created", "message": message_payload(message)},
    )


def conversation_handoff(*, business: Business, conversation_id: int, reason: str) -> Conversation | None:
    """A person takes over: the agent stays silent until ``conversation_hand_back``."""
    with transaction.atomic(durable=True):
        updated = (
            Conversation.objects.filter(business=business, pk=conversation_id)
            .exclude(state=Conversation.State.HUMAN)
            .update(state=Conversation.State.HUMAN, handoff_reason=reason[:200], updated_at=timezone.now())
        )
        conversation = Conversation.objects.filter(business=business, pk=conversation_id).first()
        if updated and conversation is not None:
            outbox_events.handoff_requested(conversation, reason)
            transaction.on_commit(
                lambda: group_send(
                    conversation_group(conversation_id),
                    {"type": "conversation.handoff", "state": "human", "reason": reason},
                )
            )
    return conversation


def conversation_hand_back(*, business: Business, conversation_id: int) -> Conversation | None:
    """The agent answers again (explicit: staff decide when); its next reply starts with the AI disclosure."""
    with transaction.atomic(durable=True):
        updated = Conversation.objects.filter(
            business=business, pk=conversation_id, state=Conversation.State.HUMAN
        ).update(
            # The agent's next reply says again that it is an automated assistant (messaging.disclosure).
            state=Conversation.State.BOT,
            handoff_reason="",
            disclosed_at=None,
            updated_at=timezone.now(),
        )
        if updated:
            transaction.on_commit(
                lambda: group_send(
                    conversation_group(conversation_id),
                    {"type": "conversation.handoff", "state": "bot", "reason": ""},
                )
            )
    return Conversation.objects.filter(business=business, pk=conversation_id).first()


def conversation_close(*, business: Business, conversation_id: int) -> Conversation | None:
    """Staff close the conversation: the agent stops answering it, and the customer's next message opens a new
    one. A widget customer is asked "How did we do?" (``conversation_csat``); on WhatsApp, Messenger and Instagram
    the customer gets rating buttons when the agent's ``ask_channel_rating`` is on. None when the conversation
    is not this business's; closing a closed one changes nothing."""
    with transaction.atomic(durable=True):
        conversation = (
            Conversation.objects.select_for_update().filter(business=business, pk=conversation_id).first()
        )
        if conversation is None:
            return None
        if conversation.state != Conversation.State.CLOSED:
            conversation.state = Conversation.State.CLOSED
            conversation.closed_at = timezone.now()
            conversation.save(update_fields=["state", "closed_at", "updated_at"])
            outbox_events.conversation_event(conversation, EventType.CONVERSATION_CLOSED)
            ask = conversation.channel == Channel.WIDGET
            if not ask and not conversation.preview and agent_for(business).ask_channel_rating:
                _rating_ask(conversation)
            transaction.on_commit(
                lambda: group_send(
                    conversation_group(conversation_id),
                    {"type": "conversation.closed", "conversation_id": conversation_id, "csat": ask},
                )
            )
    return conversation


def _rating_ask(conversation: Conversation) -> None:
    """Queue the rating question (messaging.meta.rating) on a messaging channel, once per conversation: the
    conditional update of ``csat_asked_at`` is the claim."""
    first = Conversation.objects.filter(
        pk=conversation.pk, csat_asked_at__isnull=True, csat_score__isnull=True
    ).update(csat_asked_at=timezone.now())
    if not first:
        return
    question = Message.objects.create(
        business=conversation.business,
        conversation=conversation,
        channel=conversation.channel,
        role=Message.Role.AGENT,
        # In the language of the customer's last message in this conversation.
        text=rating.question(last_customer_text(conversation.pk)),
        asks_rating=True,
        status=Message.Status.DONE,
        delivery=Message.Delivery.QUEUED,
    )
    enqueue_outbound(question.pk)


CSAT_SCORES = range(1, 6)
# A conversation closed while its customer was away is asked about at their next visit within this time.
CSAT_ASK_WITHIN = dt.timedelta(days=7)


def conversation_csat_asked(*, business: Business, conversation_id: int) -> bool:
    """Record that "How did we do?" reached the customer: True the first time only (a second widget open
    on the same close, or the next visit, does not ask again)."""
    return (
        Conversation.objects.filter(
            business=business,
            pk=conversation_id,
            state=Conversation.State.CLOSED,
            channel=Channel.WIDGET,
            csat_asked_at__isnull=True,
            csat_score__isnull=True,
        ).update(csat_asked_at=timezone.now())
        == 1
    )


def conversation_csat(
    *,
    business: Business,
    visitor_id: str,
    conversation_id: int,
    score: int,
    channel: str = Channel.WIDGET,
) -> Conversation | None:
    """A customer answers "How did we do?" (1 to 5) for a closed conversation of theirs: a widget visitor, or
    (``channel``) a WhatsApp, Messenger or Instagram contact tapping a rating button, ``visitor_id`` then their
    platform id. Answering again replaces the score. None, and nothing written, for a conversation that is not
    this contact's on this channel at this business, or not closed."""
    if score not in CSAT_SCORES:
        raise ValueError(f"score must be 1 to 5, not {score!r}")
    with transaction.atomic(durable=True):
        updated = Conversation.objects.filter(
            business=business,
            pk=conversation_id,
            channel=channel,
            contact__external_id=visitor_id,
            state=Conversation.State.CLOSED,
        ).update(csat_score=score, csat_at=timezone.now())
        if not updated:
            return None
        conversation = Conversation.objects.get(pk=conversation_id)
        outbox_events.feedback_received(
            conversation,
            {
                "conversation_id": conversation_id,
                "kind": "csat",
                "message_id": None,
                "rating": None,
                "score": score,
                "comment": "",
            },
        )
    return conversation


def staff_reply_send(
    *, business: Business, conversation_id: int, user: AbstractBaseUser | AnonymousUser | None, text: str
) -> Message | None:
    """A staff member answers; it reaches the customer on the conversation's channel. The conversation
    moves to ``human`` (the agent must not talk over a person). None when the conversation is not this
    business's."""
    with transaction.atomic(durable=True):
        conversation = (
            Conversation.objects.select_for_update().filter(business=business, pk=conversation_id).first()
        )
        if conversation is None:
            return None
        message = Message.objects.create(
            business=business,
            conversation=conversation,
            channel=conversation.channel,
            role=Message.Role.STAFF,
            text=text,
            status=Message.Status.DONE,
            delivery=Message.Delivery.NONE
            if conversation.channel == Channel.WIDGET
            else Message.Delivery.QUEUED,
        )
        outbox_events.message_created(message)
        if conversation.state == Conversation.State.BOT:
            conversation.state = Conversation.State.HUMAN
            conversation.handoff_reason = "staff replied"
        conversation.save(update_fields=["state", "handoff_reason", "updated_at"])
        if conversation.channel == Channel.WIDGET:
            transaction.on_commit(lambda: _broadcast_created(message))
        else:
            enqueue_outbound(message.pk)
    return message


# Agent replies a customer may rate: finished ones (a streaming reply is not yet what it will be).
RATEABLE_STATUSES = (Message.Status.DONE, Message.Status.CUT)


def message_rate(
    *, business: Business, visitor_id: str, message_id: int, rating: str, comment: str = ""
) -> Message | None:
    """A widget visitor rates an agent reply (thumbs up or down, an optional comment). One rating per reply:
    rating again replaces it. None, and nothing written, unless the message is a finished agent reply in a
    widget conversation of this visitor at this business."""
    if rating not in (Message.Rating.UP, Message.Rating.DOWN):
        raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
    with transaction.atomic(durable=True):
        message = (
            # The conversation comes along (its events skip the playground's), locked is the message only.
            Message.objects.select_related("conversation")
            .select_for_update(of=("self",))
            .filter(
                business=business,
                pk=message_id,
                role=Message.Role.AGENT,
                status__in=RATEABLE_STATUSES,
                conversation__channel=Channel.WIDGET,
                conversation__contact__external_id=visitor_id,
            )
            .first()
        )
        if message is None:
            return None
        message.rating = rating
        message.rating_comment = comment.strip()[:RATING_COMMENT_MAX_CHARS]
        message.rated_at = timezone.now()
        message.save(update_fields=["rating", "rating_comment", "rated_at", "updated_at"])
        outbox_events.feedback_received(
            message.conversation,
            {
                "conversation_id": message.conversation_id,
                "kind": "rating",
                "message_id": message.pk,
                "rating": rating,
                "score": None,
                "comment": message.rating_comment,
            },
        )
    return message
