"""One reply: one customer message (or a burst of them) -> one streamed, stored agent reply.

``run_reply(message_id)`` is what the ``reply`` task (messaging.tasks) runs. The whole reply runs on the worker process's long-lived event loop (``common.aio``), whose connections to Redis,
the channel layer and the pool stay open from one reply to the next.

Exactly once:
- a per-conversation Redis lock keeps replies of one conversation in order;
- the customer message is claimed by a conditional update with a lease (``claimed_at``/``claimed_by``),
  renewed while the reply runs. A redelivered or duplicate task finds the claim held (retries later), or
  the message answered (returns). A claim whose worker process is gone (SIGKILL) or whose lease ran out is
  taken over, and the takeover restarts the same reply message (its first delta carries ``reset``);
- the final save is conditional on still holding the claim;
- an error after the claim never leaves the reply row ``streaming``: a transient one releases the claim for
  the task's next try, anything else (or the last try's) finishes the row ``failed`` with the text shown
  (messaging.replies.policy).

Streaming: deltas are coalesced (one send per ``REPLY_COALESCE_MS``), numbered per message (``seq``),
appended to the Redis log (``messaging.streams``) before each group send (resume), and the partial text is
saved about every 0.5 s. ``stop`` sets a cancel key and publishes on it; the worker listens and cancels the
stream, which closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from typing import Literal

from channels.layers import get_channel_layer

from agents import respond as agent
from agents.cards import Card
from agents.models import Agent
from agents.prompts import Turn, handoff_reason
from agents.respond import CitationJson
from agents.retrieval import Prefetch
from agents.selectors import agent_for
from common import aio, metrics, tracing
from common.redis import close_async_client
from messaging import query_vectors, streams
from messaging.disclosure import reply_disclosure
from messaging.events import MessageCreatedEvent, MessageDoneEvent
from messaging.models import Message
from messaging.replies import policy
from messaging.replies.claim import (
    ReplyClaim,
    reply_claim,
    reply_finish,
    reply_handoff,
    reply_release,
    worker_id,
)
from messaging.replies.hold import ConversationHold
from messaging.replies.shapes import ReplyChecks, ReplyTimings, ReplyUsage
from messaging.replies.stream import ReplyStream
from messaging.selectors import message_payload

logger = logging.getLogger(__name__)

STOPPED = "stopped by the customer"

# What became of a reply (``run_reply``): ``busy`` is retried by the task; the rest end it (``waiting``: a
# message of the conversation is being read, and its reading queues the reply: messaging.media_reading).
ReplyOutcome = Literal[
    "done", "cut", "failed", "stopped", "handoff", "busy", "answered", "human", "gone", "lost", "waiting"
]

db = aio.database


async def _agent_of(claim: ReplyClaim) -> Agent:
    """The agent's settings (the usual claim reads them in the same round trip): the draft's in a
    playground conversation, the published ones for customers."""
    agent = claim.agent
    if agent is None:
        # The first reply of a business creates its agent's settings with the defaults.
        agent = await db(agent_for, claim.customer.business)
    return agent.with_draft() if claim.conversation.preview else agent


def _conversation_of(message_id: int) -> int | None:
    return Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True).first()


async def run_reply(
    message_id: int,
    queued_at: float | None = None,
    conversation_id: int | None = None,
    business_id: int | None = None,
    text: str | None = None,
    query_vector_token: str | None = None,
    may_retry: bool = False,
) -> ReplyOutcome:
    """The whole reply, in the caller's event loop. Returns what happened: ``done``, ``cut``, ``failed``,
    ``stopped``, ``handoff``, ``busy`` (retry later), ``answered``, ``human``, ``gone``, ``lost``, ``waiting``.

    ``conversation_id``, ``business_id`` and ``text`` (the customer's message) come with the task: the lock
    is taken without a query, and retrieval for ``text`` starts while the reply is claimed, with the vector
    the chat socket hands over under ``query_vector_token`` (messaging.query_vectors).

    Raises an error met before the claim, and with ``may_retry`` (the task will try again) a transient one
    met after it, the claim released; any other error after the claim finishes the reply ``failed``."""
    try:
        with tracing.span("reply", message_id=message_id):
            outcome = await _run_reply(
                message_id, queued_at, conversation_id, business_id, text, query_vector_token, may_retry
            )
    finally:
        if not aio.on_worker_loop():
            await _close_loop_clients()
    metrics.REPLIES.labels(outcome).inc()
    return outcome


async def _close_loop_clients() -> None:
    """Close the connections a short-lived loop opened (a test's ``async_to_sync``): its loop ends here."""
    from inference.transport import close_clients

    await close_clients()
    await streams.close_cancel_watch()
    await close_async_client()


async def _run_reply(
    message_id: int,
    queued_at: float | None,
    conversation_id: int | None,
    business_id: int | None,
    text: str | None,
    query_vector_token: str | None,
    may_retry: bool,
) -> ReplyOutcome:
    started = time.perf_counter()
    wall_start = time.time()
    worker = f"{worker_id()}:{uuid.uuid4().hex[:8]}"
    if conversation_id is None:  # a task queued by an older release
        conversation_id = await db(_conversation_of, message_id)
        if conversation_id is None:
            return "gone"
    hold = ConversationHold(conversation_id, worker)
    if not await hold.lock():
        return "busy"
    locked = time.perf_counter()
    prefetch = None
    if business_id and text:
        handed = functools.partial(query_vectors.take, query_vector_token) if query_vector_token else None
        prefetch = Prefetch.start(business_id, text, handed)
    claim: ReplyClaim | None = None
    stream: ReplyStream | None = None
    try:
        claimed = await db(reply_claim, message_id=message_id, worker=worker, conversation_id=conversation_id)
        if isinstance(claimed, str):
            return claimed
        claim = claimed
        agent_row = await _agent_of(claim)
        turns = [Turn(role=m.role, text=m.text) for m in claim.turns]
        timings: ReplyTimings = {
            "lock": round((locked - started) * 1000, 2),
            "claim": round((time.perf_counter() - locked) * 1000, 2),
        }
        if queued_at is not None:
            timings["queue_wait"] = round(max(0.0, wall_start - queued_at) * 1000, 2)
        question = "\n".join(m.text for m in claim.questions) or claim.customer.text
        group = claim.conversation.group_name

        reason = handoff_reason(agent_row, question, consecutive_failures=claim.failures)
        if reason:
            said = agent_row.handoff_message
            if not await db(reply_handoff, claim=claim, worker=worker, reason=reason, text=said):
                return "lost"
            await hold.release()
            claim.reply.text, claim.reply.status = said, Message.Status.DONE
            layer = get_channel_layer()
            await layer.group_send(group, _created_event(claim.reply))
            await layer.group_send(group, _done_event(claim.reply.pk, said, "done", []))
            return "handoff"

        # Set before the reply is announced: its message.created carries it, and the final save stores it.
        claim.reply.disclosure = reply_disclosure(
            agent=agent_row,
            question=question,
            disclosed_at=claim.conversation.disclosed_at,
            previous_at=claim.previous_at,
            question_at=claim.question_at,
        )
        # Only a taken-over reply can have streamed already: its numbering goes on from the log.
        seq = await streams.log_last_seq(claim.reply.pk) if claim.taken_over else 0
        stream = ReplyStream(group, claim.reply.pk, seq, reset=seq > 0)
        hold.renew(claim.customer.pk)
        return await _stream_reply(
            claim, agent_row, turns, question, stream, timings, started, hold, prefetch
        )
    except asyncio.CancelledError:
        if hold.lost:
            logger.warning("reply to message %s: another worker took the claim over", message_id)
            return "lost"
        raise
    except Exception as error:
        if claim is None:
            raise  # nothing claimed: the task tries again, or the sweeper queues the reply again
        # A renewal after this point would take the claim back (or find it gone and cancel this task).
        await hold.stop_renewing()
        if may_retry and policy.is_transient(error):
            logger.warning("reply to message %s: transient error, claim released", message_id, exc_info=True)
            await _release(claim, worker)
            raise
        logger.exception("reply to message %s failed", message_id)
        return await _finish_failed(claim, worker, hold, stream, error)
    finally:
        if prefetch is not None:
            prefetch.cancel()
        await hold.release()


async def _release(claim: ReplyClaim, worker: str) -> None:
    """Give the claim up for the next try, which takes it over in the same reply row."""
    try:
        await db(reply_release, customer_id=claim.customer.pk, worker=worker)
    except Exception:
        # The database may be what failed: the lease then runs out, and the claim is stale all the same.
        logger.warning("reply to message %s: claim not released", claim.customer.pk, exc_info=True)


async def _finish_failed(
    claim: ReplyClaim, worker: str, hold: ConversationHold, stream: ReplyStream | None, error: Exception
) -> ReplyOutcome:
    """The reply row finished ``failed`` with the text already shown (the widget says the reply could not
    finish and offers to ask again), and its sockets told. An error here leaves the claim to run out (the
    sweeper queues the reply again)."""
    text = stream.text if stream is not None else ""
    saved = await db(
        reply_finish,
        claim=claim,
        worker=worker,
        status=Message.Status.FAILED,
        text=text,
        citations=[],
        cards=[],
        grounding={},
        usage={},
        timings={},
        error=f"{type(error).__name__}: {error}",
    )
    if not saved:
        return "lost"
    metrics.REPLY_FAILURES.labels("transient" if policy.is_transient(error) else "error").inc()
    await hold.release()
    layer = get_channel_layer()
    group = claim.conversation.group_name
    if stream is None or not stream.announced or stream.created is not None:
        # Never announced, or its message.created still waits for a first delta that will not be sent.
        claim.reply.text, claim.reply.status = text, Message.Status.FAILED
        await layer.group_send(group, _created_event(claim.reply))
    await layer.group_send(group, _done_event(claim.reply.pk, text, Message.Status.FAILED, []))
    return "failed"


def _created_event(reply: Message) -> MessageCreatedEvent:
    return {"type": "message.created", "message": message_payload(reply)}


def _done_event(message_id: int, text: str, status: str, cards: list[Card]) -> MessageDoneEvent:
    """The end of a reply as the customer's socket gets it: what the customer reads, nothing else (the
    grounding result and the timings stay on the stored message, for the business and for benchmarks)."""
    return {"type": "message.done", "message_id": message_id, "text": text, "status": status, "cards": cards}


async def _stream_reply(
    claim: ReplyClaim,
    agent_row: Agent,
    turns: list[Turn],
    question: str,
    stream: ReplyStream,
    timings: ReplyTimings,
    started: float,
    hold: ConversationHold,
    prefetch: Prefetch | None,
) -> ReplyOutcome:
    reply_id = claim.reply.pk
    setup_started = time.perf_counter()
    cancels = streams.cancel_watch()
    stop_asked = await cancels.watch(reply_id)
    timings["stream_setup"] = round((time.perf_counter() - setup_started) * 1000, 2)
    final: agent.Done | None = None
    citations: list[CitationJson] = []
    usage: ReplyUsage = {}

    async def consume() -> None:
        # respond() always ends with Done: a model that fails leaves the answer composed from the data.
        nonlocal final, citations, usage
        events = agent.respond(
            business=claim.customer.business,
            agent=agent_row,
            turns=turns,
            question=question,
            affinity_key=f"conv-{claim.conversation.pk}",
            prefetched=prefetch,
        )
        async with contextlib.aclosing(events) as iterator:
            async for event in iterator:
                if isinstance(event, agent.TextDelta):
                    if "first_token" not in timings:
                        first_token = time.perf_counter() - started
                        timings["first_token"] = round(first_token * 1000, 2)
                        metrics.REPLY_FIRST_TOKEN.observe(first_token)
                    if not stream.announced:
                        stream.announce_with_first_delta(claim.reply)
                    await stream.add(event.text)
                elif isinstance(event, agent.Citations):
                    citations = list(event.items)
                elif isinstance(event, agent.Usage):
                    usage = {
                        "prompt_tokens": event.prompt_tokens,
                        "completion_tokens": event.completion_tokens,
                    }
                else:
                    final = event

    async def watch() -> None:
        # A stop asked before the watch began left its key (checked here, beside the stream's start).
        # Shielded: a reply that ends within this round trip cancels the watch, and a Redis command cancelled
        # mid-flight can leave its pooled connection waiting for an answer that never comes.
        check = asyncio.ensure_future(streams.cancel_requested(reply_id))
        check.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            if await asyncio.shield(check):
                return
        except Exception:
            # A Redis hiccup must not end the reply: later stops still come through the watch.
            logger.warning("reply %s: could not check for an earlier stop", reply_id, exc_info=True)
        await stop_asked.wait()

    consumer = asyncio.create_task(consume())
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait({consumer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (consumer, watcher):
            if not task.done():
                task.cancel()
        await asyncio.gather(consumer, watcher, return_exceptions=True)
        cancels.unwatch(reply_id, stop_asked)
    stopped = watcher.done() and not watcher.cancelled() and watcher.exception() is None
    if consumer.done() and not consumer.cancelled() and consumer.exception() is not None:
        raise consumer.exception()  # type: ignore[misc]
    await stream.close()

    grounding: ReplyChecks
    if final is not None and not stopped:
        answer_timings = final.timings.copy()
        answer_timings.pop("first_token", None)  # the engine's own stands: counted from the task's start
        timings = {**timings, **answer_timings}
        found: ReplyChecks = {"no_results": True} if final.no_results else {}
        status, text, cards, grounding, error = (
            Message.Status.DONE,
            final.text,
            final.cards,
            {**final.grounding, **found},
            "",
        )
    else:
        # Stopped: what the customer saw stays, and all of it had passed its checks before it was shown.
        status, text, cards, grounding, error = Message.Status.CUT, stream.text, [], {}, STOPPED
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    timings["group_sends"] = stream.sends + 1
    await hold.stop_renewing()
    saved = await db(
        reply_finish,
        claim=claim,
        worker=stream_worker(claim),
        status=status,
        text=text,
        citations=citations,
        cards=cards,
        grounding=grounding,
        usage=usage,
        timings=timings,
        error=error,
    )
    if not saved:
        logger.warning("reply %s: another worker took the claim over before the final save", reply_id)
        return "lost"
    await hold.release()
    if not stream.announced:
        claim.reply.text, claim.reply.status = text, status
        await stream.announce(claim.reply)
    await stream.layer.group_send(stream.group, _done_event(reply_id, text, status, cards))
    if stopped:
        return "stopped"
    return "done" if status == Message.Status.DONE else "cut" if status == Message.Status.CUT else "failed"


def stream_worker(claim: ReplyClaim) -> str:
    """The worker id the claim was made with (kept on the customer message)."""
    return claim.customer.claimed_by or ""
