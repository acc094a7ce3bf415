"""The reply claim protocol: which worker answers a customer message, exactly once.

- ``reply_claim``: claim the newest unanswered customer message of a conversation with a conditional update
  and a lease (``claimed_at``/``claimed_by`` = host:pid:nonce), create or reuse the reply row, and read what
  the reply needs (the conversation's latest messages, the business, the agent's settings). The usual case
  is one round trip; a takeover of a stale claim (``claim_is_stale``: the lease ran out, or the process on
  this host is gone), a burst, a conversation with staff take the long way;
- ``reply_renew``: renew the lease while the reply runs (False: another worker took it over);
- ``reply_save_partial``: the text streamed so far, about every half second (a takeover resumes from it);
- ``reply_finish`` / ``reply_handoff``: the final save, conditional on still holding the claim;
- ``reply_release``: give the claim up after a transient error, for the task's next try (or the sweeper).

No transaction is held across a reply: each write is one statement.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents.cards import Card
from agents.models import Agent
from agents.respond import CitationJson
from businesses.models import Business
from messaging import outbox_events, rows, selectors
from messaging.models import Channel, Conversation, Message
from messaging.replies.shapes import ReplyChecks, ReplyTimings, ReplyUsage
from messaging.selectors import WindowMessage
from messaging.services import conversation_handoff, enqueue_outbound


def worker_id() -> str:
    """This process, as claims name it (host:pid): a claim whose process is gone is taken over."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_is_stale(claimed_at: dt.datetime | None, claimed_by: str, now: dt.datetime) -> bool:
    """A claim whose lease ran out, or whose process on this host is gone (a SIGKILLed worker)."""
    if claimed_at is None:
        return True
    if now - claimed_at > dt.timedelta(seconds=settings.REPLY_LEASE_SECONDS):
        return True
    return claimer_gone(claimed_by)


def claimer_gone(claimed_by: str) -> bool:
    """The process that made a claim (``worker_id``) ran on this host and is gone; a claim made on another
    host is never known gone (only its lease tells)."""
    host, _, rest = claimed_by.partition(":")
    pid = rest.split(":", 1)[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


# Why a claim was not made (``reply_claim``).
Unclaimed = Literal["gone", "answered", "human", "busy", "waiting"]


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
    # When the first question was written, and the message before it (None: none): the disclosure's gap.
    question_at: dt.datetime
    previous_at: dt.datetime | None
    agent: Agent | None = None  # the business's agent settings, when the claim read them too


def reply_claim(
    *, message_id: int, worker: str, conversation_id: int | None = None
) -> ReplyClaim | Unclaimed:
    """Claim the reply to a customer message, exactly once. Returns the claim, or why not:
    ``gone``, ``answered`` (already done, or superseded by a newer message of a burst), ``human``,
    ``busy`` (another live worker holds it: retry later), ``waiting`` (a photo or voice note of the conversation
    is being read: its reading queues the reply once it is settled, so that the burst is answered once).

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
    if any(m.role == Message.Role.CUSTOMER and m.status == Message.Status.PREPARING for m in window):
        return "waiting"
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
        question_at=questions[0].created_at if questions else customer.created_at,
        previous_at=earlier[-1].created_at if earlier else None,
        agent=agent,
    )


def _claim_in_one_trip(
    message_id: int, conversation_id: int, now: dt.datetime, worker: str
) -> ReplyClaim | None:
    """The fresh claim of a question the agent answers, in one round trip, or None (nothing written) for
    anything else: a claimed or answered message, a newer question waiting (a burst) or a message being read, a conversation with
    staff or closed, another conversation's message. Two statements go out together: the conditional
    update that claims the message, with the reply row it creates and the rows the reply needs (message,
    conversation, business, the agent's settings); then the conversation's window, read after them."""
    table = connection.ops.quote_name(Message._meta.db_table)
    reply = Message(role=Message.Role.AGENT, status=Message.Status.STREAMING, text="", reply_to_id=message_id)
    insert, insert_params = rows.insert_select(
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
        "AND n.role = m.role AND (n.status = m.status AND n.id > m.id OR n.status = %s)) "
        f"RETURNING {rows.returning(Message, 'm')}, {rows.returning(Conversation, 'c')}, {rows.returning(Business, 'b')}, "
        f"{rows.returning(Agent, 'a')}), "
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
        Message.Status.PREPARING,
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
    customer = rows.instance(Message, [next(values) for _ in rows.row_columns(Message)])
    conversation = rows.instance(Conversation, [next(values) for _ in rows.row_columns(Conversation)])
    customer.business = rows.instance(Business, [next(values) for _ in rows.row_columns(Business)])
    customer.conversation = conversation
    agent_values = list(values)
    agent = rows.instance(Agent, agent_values) if agent_values[0] is not None else None  # None: first reply
    reply.pk = row[0]
    reply.business_id, reply.conversation_id, reply.channel = (
        customer.business_id,
        customer.conversation_id,
        customer.channel,
    )
    return _claim_of(customer, conversation, rows.stored(reply), window, taken_over=False, agent=agent)


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


def reply_renew(*, customer_id: int, worker: str) -> bool:
    """Renew the lease; False when another worker has taken the reply over (this one must stop)."""
    return (
        Message.objects.filter(
            pk=customer_id, claimed_by=worker[:100], status=Message.Status.RECEIVED
        ).update(claimed_at=timezone.now())
        == 1
    )


def reply_release(*, customer_id: int, worker: str) -> bool:
    """Give up this worker's claim at once (its lease made to have run out), keeping the reply row: the next
    claim takes it over and restarts the reply in the same row (messaging.replies.policy, transient errors)."""
    expired = timezone.now() - dt.timedelta(seconds=settings.REPLY_LEASE_SECONDS + 1)
    return (
        Message.objects.filter(
            pk=customer_id, claimed_by=worker[:100], status=Message.Status.RECEIVED
        ).update(claimed_at=expired)
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
    citations: list[CitationJson],
    cards: list[Card],
    grounding: ReplyChecks,
    usage: ReplyUsage,
    timings: ReplyTimings,
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
    fields = [
        "status",
        "text",
        "disclosure",
        "citations",
        "cards",
        "grounding",
        "usage",
        "timings",
        "error",
        "updated_at",
    ]
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
    now = timezone.now()
    # The customer read the disclosure only if the reply said something after it.
    disclosed = bool(reply.disclosure and text)
    # A transaction only for the webhook event, which must commit with the reply (outbox.emit).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"WITH held AS (UPDATE {table} SET status = %s WHERE id = %s AND claimed_by = %s AND status = %s "
            "RETURNING id), "
            f"questions AS (UPDATE {table} SET status = %s WHERE id = ANY(%s) AND id <> %s AND status = %s "
            f"AND {held}), "
            f"saved AS (UPDATE {table} SET {', '.join(sets)} WHERE id = %s AND {held}), "
            f"touched AS (UPDATE {quote(Conversation._meta.db_table)} SET updated_at = %s, "
            f"disclosed_at = COALESCE(%s, disclosed_at) WHERE id = %s AND {held}) "
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
                now,
                now if disclosed else None,
                claim.conversation.pk,
            ],
        )
        if not cursor.fetchone()[0]:
            return False
        outbox_events.message_created(reply)
    if outbound:
        enqueue_outbound(reply.pk)
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
