"""Writes for conversations and messages. Every function takes the business first.

Side effects (the reply task, channel-layer broadcasts, outbound sends) run on commit, never before the
rows they name exist for other processes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from businesses.models import Business
from messaging import selectors
from messaging.models import Channel, Contact, Conversation, Message
from messaging.selectors import WindowMessage, message_payload

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=models.Model)


def group_send(group: str, event: dict[str, Any]) -> None:
    """Broadcast to a conversation's group from sync code (a service's on-commit hook)."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, event)


def _enqueue_reply(message: Message, query_vector_token: str | None = None) -> None:
    from messaging.tasks import reply

    wait = (
        settings.WIDGET_BURST_WAIT_SECONDS
        if message.channel == Channel.WIDGET
        else settings.REPLY_BURST_WAIT_SECONDS
    )
    # queued_at: when the task may start, so that the reply's queue_wait timing excludes the burst wait.
    reply.apply_async(
        (message.pk, time.time() + wait),
        {
            "conversation_id": message.conversation_id,
            "business_id": message.business_id,
            "text": message.text,
            **({"query_vector_token": query_vector_token} if query_vector_token else {}),
        },
        countdown=wait or None,
    )


def _enqueue_outbound(message_id: int) -> None:
    try:
        from messaging.meta.tasks import send_message  # type: ignore[import-not-found]
    except ImportError:  # the channels app is not installed in this deployment
        logger.error("no outbound sender for message %s (messaging.meta is missing)", message_id)
        return
    send_message.delay(message_id)


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
    *, business: Business, channel: str, contact_external_id: str, contact_name: str = ""
) -> Conversation:
    """The contact's open conversation on this channel, created (with the contact) when there is none."""
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
            conversation = Conversation.objects.create(business=business, contact=contact, channel=channel)
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
) -> Message | None:
    """Store a customer's message and, when the agent has the conversation, queue its reply on commit.

    Idempotent: a message whose ``channel_message_id`` (per channel) or ``client_message_id`` (per
    conversation) is already stored returns None and queues nothing. In ``human`` state the message is
    stored as ``skipped``: staff answer it.

    ``conversation_id``: the contact's conversation as the caller knows it (an open chat socket). While it is
    theirs and open, the message goes straight into it, in two statements without a transaction; otherwise
    the contact's open conversation is looked up (or created) under the contact's row lock.

    ``query_vector_token``: the caller will hand the question's vector over under it (messaging.query_vectors).
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
    )
    if conversation_id is not None:
        message.conversation_id = conversation_id
        if _insert_into_open_conversation(message, contact_external_id, received_at):
            _queue_reply(message, query_vector_token)
            return message
    with transaction.atomic(durable=True):
        conversation = conversation_open(
            business=business,
            channel=channel,
            contact_external_id=contact_external_id,
            contact_name=contact_name,
        )
        message.conversation_id = conversation.pk
        if conversation.state != Conversation.State.BOT:
            message.status = Message.Status.SKIPPED
        try:
            with transaction.atomic():  # a savepoint: a duplicate must not undo the conversation just opened
                message.save(force_insert=True)
        except IntegrityError:
            return None
        return _message_received(message, received_at, query_vector_token)


def _insert_into_open_conversation(
    message: Message, contact_external_id: str, received_at: dt.datetime
) -> bool:
    """Insert the unsaved customer ``message`` in one statement, without a transaction, if its conversation
    is this contact's, this business's and open; its status follows the conversation's state, and the same
    statement notes when the customer last wrote. False when it is not, or for a duplicate: the caller takes
    the long way, which tells the two apart."""
    insert, params = _message_insert_select(
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
            "AND c.state <> %s ON CONFLICT DO NOTHING RETURNING id, status), "
            f"touched AS (UPDATE {conversations} SET last_customer_message_at = %s, updated_at = %s "
            "WHERE id = %s AND EXISTS (SELECT 1 FROM inserted) "
            "AND (last_customer_message_at IS NULL OR last_customer_message_at < %s)) "
            "SELECT id, status FROM inserted",
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
        return False
    message.pk, message.status = row
    _stored(message)
    return True


def _queue_reply(message: Message, query_vector_token: str | None = None) -> None:
    """Queue the reply when the agent has the conversation (on commit: at once outside a transaction)."""
    if message.status == Message.Status.RECEIVED:
        transaction.on_commit(lambda: _enqueue_reply(message, query_vector_token))


def _message_received(
    message: Message, received_at: dt.datetime, query_vector_token: str | None = None
) -> Message:
    """Queue the reply (on commit), and note when the customer last wrote."""
    _queue_reply(message, query_vector_token)
    Conversation.objects.filter(pk=message.conversation_id).filter(
        Q(last_customer_message_at__isnull=True) | Q(last_customer_message_at__lt=received_at)
    ).update(last_customer_message_at=received_at, updated_at=timezone.now())
    return message


def _broadcast_created(message: Message) -> None:
    group_send(
        f"conv.{message.conversation_id}", {"type": "message.created", "message": message_payload(message)}
    )


def conversation_handoff(*, business: Business, conversation_id: int, reason: str) -> Conversation | None:
    """A person takes over: the agent stays silent until ``conversation_hand_back``."""
    with transaction.atomic(durable=True):
        updated = (
            Conversation.objects.filter(business=business, pk=conversation_id)
            .exclude(state=Conversation.State.HUMAN)
            .update(state=Conversation.State.HUMAN, handoff_reason=reason[:200], updated_at=timezone.now())
        )
        if updated:
            transaction.on_commit(
                lambda: group_send(
                    f"conv.{conversation_id}",
                    {"type": "conversation.handoff", "state": "human", "reason": reason},
                )
            )
    return Conversation.objects.filter(business=business, pk=conversation_id).first()


def conversation_hand_back(*, business: Business, conversation_id: int) -> Conversation | None:
    """The agent answers again (explicit: staff decide when)."""
    with transaction.atomic(durable=True):
        updated = Conversation.objects.filter(
            business=business, pk=conversation_id, state=Conversation.State.HUMAN
        ).update(state=Conversation.State.BOT, handoff_reason="", updated_at=timezone.now())
        if updated:
            transaction.on_commit(
                lambda: group_send(
                    f"conv.{conversation_id}", {"type": "conversation.handoff", "state": "bot", "reason": ""}
                )
            )
    return Conversation.objects.filter(business=business, pk=conversation_id).first()


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
        if conversation.state == Conversation.State.BOT:
            conversation.state = Conversation.State.HUMAN
            conversation.handoff_reason = "staff replied"
        conversation.save(update_fields=["state", "handoff_reason", "updated_at"])
        if conversation.channel == Channel.WIDGET:
            transaction.on_commit(lambda: _broadcast_created(message))
        else:
            transaction.on_commit(lambda: _enqueue_outbound(message.pk))
    return message


# --- The reply task's writes -----------------------------------------------------------------------------------


def worker_id() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


def claim_is_stale(claimed_at: dt.datetime | None, claimed_by: str, now: dt.datetime) -> bool:
    """A claim whose lease ran out, or whose process on this host is gone (a SIGKILLed worker)."""
    if claimed_at is None:
        return True
    if now - claimed_at > dt.timedelta(seconds=settings.REPLY_LEASE_SECONDS):
        return True
    host, _, rest = claimed_by.partition(":")
    pid = rest.split(":", 1)[0]
    if host == socket.gethostname() and pid.isdigit():
        import os

        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@dataclass
class ReplyClaim:
    customer: Message
    conversation: Conversation
    reply: Message
    # The unanswered customer messages this reply answers (a burst), oldest first.
    questions: list[WindowMessage]
    taken_over: bool  # a dead worker had started this reply
    turns: list[WindowMessage]  # the conversation before the questions, oldest first (the reply's context)
    failures: int  # the agent's latest replies that failed in a row (for the handoff trigger)
    agent: Agent | None = None  # the business's agent settings, when the claim read them too


def reply_claim(*, message_id: int, worker: str, conversation_id: int | None = None) -> ReplyClaim | str:
    """Claim the reply to a customer message, exactly once. Returns the claim, or why not:
    ``gone``, ``answered`` (already done, or superseded by a newer message of a burst), ``human``,
    ``busy`` (another live worker holds it: retry later).

    On the hot path of every reply. With ``conversation_id`` (the reply task knows it), the usual case, a
    fresh claim of the conversation's newest question while the agent has it, is one round trip
    (``_claim_in_one_trip``). Anything else reads the message, then one read of the conversation's latest
    messages gives the burst check, the questions, the turns and the failures; no transaction (BEGIN and
    COMMIT are two more round trips)."""
    now = timezone.now()
    if conversation_id is not None:
        claim = _claim_in_one_trip(message_id, conversation_id, now, worker)
        if claim is not None:
            return claim
    # No transaction: the claim is a conditional update (a fresh one makes the reply row in the same
    # statement); a takeover's writes stand on their own (a worker that dies between them leaves a claim
    # that is taken over again, with its reply row or without).
    customer = (
        Message.objects.select_related("conversation", "business")
        .filter(pk=message_id, role=Message.Role.CUSTOMER)
        .first()
    )
    if customer is None:
        return "gone"
    if customer.status != Message.Status.RECEIVED:
        return "answered"
    conversation = customer.conversation
    if conversation.state != Conversation.State.BOT:
        Message.objects.filter(pk=message_id, status=Message.Status.RECEIVED).update(
            status=Message.Status.SKIPPED
        )
        return "human"
    window = selectors.conversation_window(conversation.pk)
    if any(
        m.pk > message_id and m.role == Message.Role.CUSTOMER and m.status == Message.Status.RECEIVED
        for m in window
    ):
        # A burst: the newest message's task answers them all.
        return "answered"
    if not claim_is_stale(customer.claimed_at, customer.claimed_by, now):
        return "busy"
    if customer.claimed_at is None:
        # Fresh after all (a task without its conversation, or a race the one-trip claim just lost): the
        # one-trip claim checks everything again under its conditional update. None: another worker's won.
        return _claim_in_one_trip(message_id, conversation.pk, now, worker) or "busy"
    reply = _claim_taken_over(customer, now, worker)
    if reply is None:
        return "busy"  # another worker won the conditional update
    customer.claimed_at, customer.claimed_by = now, worker[:100]
    return _claim_of(customer, conversation, reply, window, taken_over=True)


def _claim_of(
    customer: Message,
    conversation: Conversation,
    reply: Message,
    window: list[WindowMessage],
    taken_over: bool,
    agent: Agent | None = None,
) -> ReplyClaim:
    reply.conversation = conversation
    message_id = customer.pk
    window = [m for m in window if m.pk != reply.pk]
    waiting = [m for m in window if m.role == Message.Role.CUSTOMER and m.status == Message.Status.RECEIVED]
    last_answered = max(
        (m.pk for m in window if m.pk < message_id and m.role != Message.Role.CUSTOMER), default=0
    )
    questions = [m for m in waiting if last_answered < m.pk <= message_id]
    first_question = questions[0].pk if questions else message_id
    earlier = [m for m in window if m.pk < first_question]
    return ReplyClaim(
        customer,
        conversation,
        reply,
        questions,
        taken_over,
        turns=selectors.context_turns(earlier),
        failures=selectors.failures_in_a_row(earlier),
        agent=agent,
    )


@functools.cache
def _row_columns(model: type[models.Model]) -> list[tuple[str, str, list[Any], Any]]:
    """(column, attname, converters, column expression) of each concrete field of ``model``, in order: to
    build instances from a raw statement's rows as the ORM would (JSON decoded, and so on)."""
    return [
        (str(field.column), field.attname, field.get_db_converters(connection), field.cached_col)
        for field in model._meta.concrete_fields
    ]


def _returning(model: type[models.Model], alias: str) -> str:
    quote = connection.ops.quote_name
    return ", ".join(
        f"{alias}.{quote(column)} AS {quote(f'{alias}__{column}')}" for column, *_ in _row_columns(model)
    )


def _instance(model: type[ModelT], values: Sequence[Any]) -> ModelT:
    columns = _row_columns(model)
    converted = []
    for (_, _, converters, expression), value in zip(columns, values, strict=True):
        for convert in converters:
            value = convert(value, expression, connection)
        converted.append(value)
    return model.from_db(connection.alias, [attname for _, attname, *_ in columns], converted)


def _claim_in_one_trip(
    message_id: int, conversation_id: int, now: dt.datetime, worker: str
) -> ReplyClaim | None:
    """The fresh claim of a question the agent answers, in one round trip, or None (nothing written) for
    anything else: a claimed or answered message, a newer question waiting (a burst), a conversation with
    staff or closed, another conversation's message. Two statements go out together: the conditional
    update that claims the message, with the reply row it creates and the rows the reply needs (message,
    conversation, business, the agent's settings); then the conversation's window, read after them."""
    table = connection.ops.quote_name(Message._meta.db_table)
    reply = Message(role=Message.Role.AGENT, status=Message.Status.STREAMING, text="", reply_to_id=message_id)
    insert, insert_params = _message_insert_select(
        reply,
        expressions={
            "business_id": 'claimed."m__business_id"',
            "conversation_id": 'claimed."m__conversation_id"',
            "channel": 'claimed."m__channel"',
        },
    )
    quote = connection.ops.quote_name
    claim_sql = (
        f"WITH claimed AS (UPDATE {table} m SET claimed_at = %s, claimed_by = %s "
        f"FROM {quote(Conversation._meta.db_table)} c JOIN {quote(Business._meta.db_table)} b "
        f"ON b.id = c.business_id LEFT JOIN {quote(Agent._meta.db_table)} a ON a.business_id = c.business_id "
        "WHERE m.id = %s AND m.conversation_id = %s AND m.role = %s AND m.status = %s AND m.claimed_at IS NULL "
        "AND c.id = m.conversation_id AND c.state = %s AND b.id = m.business_id "
        f"AND NOT EXISTS (SELECT 1 FROM {table} n WHERE n.conversation_id = m.conversation_id "
        "AND n.role = m.role AND n.status = m.status AND n.id > m.id) "
        f"RETURNING {_returning(Message, 'm')}, {_returning(Conversation, 'c')}, {_returning(Business, 'b')}, "
        f"{_returning(Agent, 'a')}), "
        f"reply AS ({insert} FROM claimed RETURNING id) "
        "SELECT reply.id, claimed.* FROM reply, claimed"
    )
    params = [
        now,
        worker[:100],
        message_id,
        conversation_id,
        Message.Role.CUSTOMER,
        Message.Status.RECEIVED,
        Conversation.State.BOT,
        *insert_params,
    ]
    # The cursors first: making one opens the thread's connection if it has none yet.
    with (
        connection.cursor() as cursor,
        connection.cursor() as window_cursor,
        connection.connection.pipeline(),
    ):
        cursor.execute(claim_sql, params)
        window_cursor.execute(selectors.WINDOW_SQL, [conversation_id])
        row = cursor.fetchone()
        window = selectors.window_rows(window_cursor.fetchall())
    if row is None:
        return None
    values = iter(row[1:])
    customer = _instance(Message, [next(values) for _ in _row_columns(Message)])
    conversation = _instance(Conversation, [next(values) for _ in _row_columns(Conversation)])
    customer.business = _instance(Business, [next(values) for _ in _row_columns(Business)])
    customer.conversation = conversation
    agent_values = list(values)
    agent = _instance(Agent, agent_values) if agent_values[0] is not None else None  # None: first reply
    reply.pk = row[0]
    reply.business_id, reply.conversation_id, reply.channel = (
        customer.business_id,
        customer.conversation_id,
        customer.channel,
    )
    return _claim_of(customer, conversation, _stored(reply), window, taken_over=False, agent=agent)


def _reply_row(customer: Message) -> Message:
    """The agent's reply to ``customer``, unsaved: streaming, no text yet."""
    return Message(
        business_id=customer.business_id,
        conversation_id=customer.conversation_id,
        channel=customer.channel,
        role=Message.Role.AGENT,
        status=Message.Status.STREAMING,
        text="",
        reply_to=customer,
    )


def _claim_taken_over(customer: Message, now: dt.datetime, worker: str) -> Message | None:
    """Take over a stale claim (its worker died, or its lease ran out): the reply restarts in the same row."""
    # The conditional update is the claim: of two workers reading the same stale lease, one wins.
    won = Message.objects.filter(
        pk=customer.pk, status=Message.Status.RECEIVED, claimed_at=customer.claimed_at
    ).update(claimed_at=now, claimed_by=worker[:100])
    if not won:
        return None
    # The dead worker may have died before creating the reply row (this worker holds the claim: no race).
    reply = Message.objects.filter(reply_to=customer).first()
    if reply is None:
        reply = _reply_row(customer)
        reply.save(force_insert=True)
        return reply
    if reply.status != Message.Status.STREAMING:
        reply.status = Message.Status.STREAMING
        reply.text = ""
        reply.save(update_fields=["status", "text", "updated_at"])
    return reply


def _message_insert_select(
    message: Message, *, expressions: dict[str, str] | None = None
) -> tuple[str, list[Any]]:
    """``INSERT INTO <messages> (every column) SELECT ...`` of the unsaved ``message``, for one statement that
    reads and writes at once (the caller adds FROM, WHERE and RETURNING). A column named in ``expressions``
    (by attname) takes that SQL over the caller's FROM; every other takes the instance's value, prepared by
    its field as ``save()`` would (defaults, auto_now), so a field added to the model is covered here too."""
    columns: list[str] = []
    selects: list[str] = []
    params: list[Any] = []
    for field in Message._meta.concrete_fields:
        if field.primary_key or field.column is None:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if expressions and field.attname in expressions:
            selects.append(expressions[field.attname])
        else:
            selects.append("%s")
            params.append(field.get_db_prep_save(field.pre_save(message, True), connection))
    table = connection.ops.quote_name(Message._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)}", params


def _stored(message: Message) -> Message:
    """An instance built from a row a raw statement just wrote: saved, as the ORM would have left it."""
    message._state.adding = False
    message._state.db = connection.alias
    return message


def reply_renew(*, customer_id: int, worker: str) -> bool:
    """Renew the lease; False when another worker has taken the reply over (this one must stop)."""
    return (
        Message.objects.filter(
            pk=customer_id, claimed_by=worker[:100], status=Message.Status.RECEIVED
        ).update(claimed_at=timezone.now())
        == 1
    )


def reply_save_partial(*, reply_id: int, text: str) -> None:
    Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        text=text, updated_at=timezone.now()
    )


def reply_finish(
    *,
    claim: ReplyClaim,
    worker: str,
    status: str,
    text: str,
    citations: list[dict[str, Any]],
    cards: list[dict[str, Any]],
    grounding: dict[str, Any],
    usage: dict[str, Any],
    timings: dict[str, Any],
    error: str = "",
) -> bool:
    """Save the final reply and mark the customer messages answered, if this worker still holds the claim.
    Queues the outbound send for messaging channels.

    One statement (atomic as such): its first part is the conditional update that checks the claim is
    still held, and every other part writes only when it matched."""
    reply = claim.reply
    reply.status = status
    reply.text = text
    reply.citations = citations
    reply.cards = cards
    reply.grounding = grounding
    reply.usage = usage
    reply.timings = timings
    reply.error = error[:2000]
    fields = ["status", "text", "citations", "cards", "grounding", "usage", "timings", "error", "updated_at"]
    outbound = claim.conversation.channel != Channel.WIDGET and bool(text)
    if outbound:
        reply.delivery = Message.Delivery.QUEUED
        fields.append("delivery")
    quote = connection.ops.quote_name
    sets, values = [], []
    concrete = {field.name: field for field in Message._meta.concrete_fields}
    for name in fields:
        field = concrete[name]
        sets.append(f"{quote(str(field.column))} = %s")
        values.append(field.get_db_prep_save(field.pre_save(reply, False), connection))
    table = quote(Message._meta.db_table)
    held = "EXISTS (SELECT 1 FROM held)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH held AS (UPDATE {table} SET status = %s WHERE id = %s AND claimed_by = %s AND status = %s "
            "RETURNING id), "
            f"questions AS (UPDATE {table} SET status = %s WHERE id = ANY(%s) AND id <> %s AND status = %s "
            f"AND {held}), "
            f"saved AS (UPDATE {table} SET {', '.join(sets)} WHERE id = %s AND {held}), "
            f"touched AS (UPDATE {quote(Conversation._meta.db_table)} SET updated_at = %s WHERE id = %s AND {held}) "
            "SELECT count(*) FROM held",
            [
                Message.Status.ANSWERED,
                claim.customer.pk,
                worker[:100],
                Message.Status.RECEIVED,
                Message.Status.ANSWERED,
                [m.pk for m in claim.questions],
                claim.customer.pk,
                Message.Status.RECEIVED,
                *values,
                reply.pk,
                timezone.now(),
                claim.conversation.pk,
            ],
        )
        if not cursor.fetchone()[0]:
            return False
    if outbound:
        transaction.on_commit(lambda: _enqueue_outbound(reply.pk))
    return True


def reply_handoff(*, claim: ReplyClaim, worker: str, reason: str, text: str) -> bool:
    """The conversation goes to a person instead of an answer: the reply says so, state becomes human."""
    done = reply_finish(
        claim=claim,
        worker=worker,
        status=Message.Status.DONE,
        text=text,
        citations=[],
        cards=[],
        grounding={"handoff": reason},
        usage={},
        timings={},
    )
    if done:
        conversation_handoff(
            business=claim.customer.business, conversation_id=claim.conversation.pk, reason=reason
        )
    return done
