"""The reply task: one customer message (or a burst of them) -> one streamed, stored agent reply.

``reply(message_id)`` runs on the ``replies`` queue (acks_late and reject-on-worker-lost are global). The
whole reply runs on the worker process's long-lived event loop (``config.aio``), whose connections to Redis,
the channel layer and the pool stay open from one reply to the next.

Exactly once:
- a per-conversation Redis lock keeps replies of one conversation in order;
- the customer message is claimed by a conditional update with a lease (``claimed_at``/``claimed_by``),
  renewed while the reply runs. A redelivered or duplicate task finds the claim held (retries later), or
  the message answered (returns). A claim whose worker process is gone (SIGKILL) or whose lease ran out is
  taken over, and the takeover restarts the same reply message (its first delta carries ``reset``);
- the final save is conditional on still holding the claim.

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
from dataclasses import asdict
from typing import Any

from celery import shared_task
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from agents import respond as agent
from agents.models import Agent
from agents.prompts import Turn, handoff_reason
from agents.selectors import agent_for
from config import aio
from messaging import query_vectors, streams
from messaging.models import Message
from messaging.ratelimits import _clients as _redis_clients
from messaging.ratelimits import redis
from messaging.selectors import message_payload
from messaging.services import (
    ReplyClaim,
    claim_is_stale,
    reply_claim,
    reply_finish,
    reply_handoff,
    reply_renew,
    reply_save_partial,
    worker_id,
)

logger = logging.getLogger(__name__)

PARTIAL_SAVE_SECONDS = 0.5
STOPPED = "stopped by the customer"


db = aio.database


@shared_task(name="messaging.tasks.reply", bind=True, acks_late=True, max_retries=None)
def reply(self: Any, message_id: int, queued_at: float | None = None, **known: Any) -> str:
    """``known``: what the sender already knows of the message (see ``run_reply``)."""
    outcome = aio.run(run_reply(message_id, queued_at, **known))
    if outcome == "busy":
        # Another live worker holds the conversation or this message: come back when it may be done.
        raise self.retry(countdown=0.25, max_retries=int(settings.REPLY_LEASE_SECONDS * 8))
    return outcome


def _lock_key(conversation_id: int) -> str:
    return f"reply-lock:{conversation_id}"


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
LOCK_WAIT_SECONDS = 1.0  # the previous reply of the conversation is usually saving its last words


class _Hold:
    """What a running reply holds: its conversation's lock (replies in order) and, once claimed, the lease on
    the customer message, renewed until the final save. Losing the lease to a takeover cancels the reply."""

    def __init__(self, conversation_id: int, worker: str) -> None:
        self.conversation_id = conversation_id
        self.worker = worker
        self.locked = False
        self.lost = False
        self.stopping = asyncio.Event()
        self.heartbeat: asyncio.Task[None] | None = None

    async def lock(self) -> bool:
        client, key, ttl = redis(), _lock_key(self.conversation_id), settings.REPLY_LEASE_SECONDS
        waited_until = time.monotonic() + LOCK_WAIT_SECONDS
        while not await client.set(key, self.worker, nx=True, ex=ttl):
            raw = await client.get(key)
            holder = raw.decode() if isinstance(raw, bytes) else str(raw or "")
            if holder and claim_is_stale(timezone.now(), holder, timezone.now()):
                # The holder's process is gone (same host): take the lock over.
                if not await client.set(key, self.worker, xx=True, ex=ttl):
                    continue
                break
            if time.monotonic() >= waited_until:
                return False
            await asyncio.sleep(0.02)
        self.locked = True
        return True

    def renew(self, customer_id: int) -> None:
        reply_task = asyncio.current_task()
        assert reply_task is not None
        interval = max(0.5, settings.REPLY_LEASE_SECONDS / 4)

        async def beat() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=interval)
                    return
                try:
                    held = await db(reply_renew, customer_id=customer_id, worker=self.worker)
                    await redis().set(
                        _lock_key(self.conversation_id), self.worker, xx=True, ex=settings.REPLY_LEASE_SECONDS
                    )
                except Exception:
                    # A database or Redis hiccup: the lease outlives a few missed renewals; try again.
                    logger.warning("reply lease of message %s not renewed", customer_id, exc_info=True)
                    continue
                if not held:
                    self.lost = True
                    reply_task.cancel()
                    return

        self.heartbeat = asyncio.create_task(beat())

    async def stop_renewing(self) -> None:
        """Before the final save: a renewal after it would find the message answered and cancel the reply.
        A signal, not ``cancel()``: a cancel that lands in a database call is swallowed by ``sync_to_async``
        (it waits for the thread), and the heartbeat would go on for ever."""
        self.stopping.set()
        if self.heartbeat is not None:
            await self.heartbeat

    async def release(self) -> None:
        """Stop renewing and unlock (the next reply of the conversation may start): idempotent."""
        await self.stop_renewing()
        if self.locked:
            self.locked = False
            await redis().eval(_RELEASE, 1, _lock_key(self.conversation_id), self.worker)


class _Stream:
    """Coalesced, numbered, logged group sends of one reply's text."""

    def __init__(self, group: str, message_id: int, seq: int, reset: bool) -> None:
        self.layer = get_channel_layer()
        self.group = group
        self.message_id = message_id
        self.seq = seq
        self.reset = reset
        self.interval = settings.REPLY_COALESCE_MS / 1000
        self.buffer: list[str] = []
        self.parts: list[str] = []
        self.last_send = 0.0
        self.last_save = time.monotonic()
        self.timer: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.sends = 0
        self.announced = False
        self.created: dict[str, Any] | None = None

    async def announce(self, reply: Message) -> None:
        """The reply's ``message.created``, on its own (a reply that ends without streaming any text)."""
        self.announced = True
        await self.layer.group_send(
            self.group, {"type": "message.created", "message": message_payload(reply)}
        )
        self.sends += 1

    def announce_with_first_delta(self, reply: Message) -> None:
        """The reply's ``message.created`` rides on its first delta: one group send less before the first
        token reaches the socket (the consumer sends the two frames in order)."""
        self.announced = True
        self.created = message_payload(reply)

    async def add(self, text: str) -> None:
        self.buffer.append(text)
        self.parts.append(text)
        now = time.monotonic()
        if now - self.last_send >= self.interval:
            await self.flush()
        elif self.timer is None:
            self.timer = asyncio.create_task(self._later(self.last_send + self.interval - now))
        if time.monotonic() - self.last_save >= PARTIAL_SAVE_SECONDS:
            self.last_save = time.monotonic()
            await db(reply_save_partial, reply_id=self.message_id, text="".join(self.parts))

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        self.timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            if not self.buffer:
                return
            self.seq += 1
            entry = {"seq": self.seq, "text": "".join(self.buffer), "reset": self.reset}
            self.buffer.clear()
            self.reset = False
            event = {"type": "reply.delta", "message_id": self.message_id, "sent_at": time.time(), **entry}
            if self.created is not None:
                event["created"], self.created = self.created, None
            # Logged, then sent, in one round trip.
            await streams.log_append(self.message_id, entry, then_send=(self.group, event))
            self.sends += 1
            self.last_send = time.monotonic()

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.timer
            self.timer = None
        await self.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def _claim_and_load(
    message_id: int, worker: str, conversation_id: int
) -> tuple[ReplyClaim, Agent] | str:
    """The claim and the agent's settings (the usual claim reads them in the same round trip)."""
    claim = await db(reply_claim, message_id=message_id, worker=worker, conversation_id=conversation_id)
    if isinstance(claim, str):
        return claim
    if claim.agent is not None:
        return claim, claim.agent
    # The first reply of a business creates its agent's settings with the defaults.
    return claim, await db(agent_for, claim.customer.business)


def _conversation_of(message_id: int) -> int | None:
    return Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True).first()


async def run_reply(
    message_id: int,
    queued_at: float | None = None,
    conversation_id: int | None = None,
    business_id: int | None = None,
    text: str | None = None,
    query_vector_token: str | None = None,
) -> str:
    """The whole reply, in the caller's event loop. Returns what happened: ``done``, ``cut``, ``failed``,
    ``stopped``, ``handoff``, ``busy`` (retry later), ``answered``, ``human``, ``gone``, ``lost``.

    ``conversation_id``, ``business_id`` and ``text`` (the customer's message) come with the task: the lock
    is taken without a query, and retrieval for ``text`` starts while the reply is claimed, with the vector
    the chat socket hands over under ``query_vector_token`` (messaging.query_vectors)."""
    try:
        return await _run_reply(message_id, queued_at, conversation_id, business_id, text, query_vector_token)
    finally:
        if not aio.on_worker_loop():
            await _close_loop_clients()


async def _close_loop_clients() -> None:
    """Close the connections a short-lived loop opened (a test's ``async_to_sync``): its loop ends here."""
    from agents.inference.client import close_clients

    await close_clients()
    await streams.close_cancel_watch()
    client = _redis_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def _run_reply(
    message_id: int,
    queued_at: float | None,
    conversation_id: int | None,
    business_id: int | None,
    text: str | None,
    query_vector_token: str | None,
) -> str:
    started = time.perf_counter()
    wall_start = time.time()
    worker = f"{worker_id()}:{uuid.uuid4().hex[:8]}"
    if conversation_id is None:  # a task queued by an older release
        conversation_id = await db(_conversation_of, message_id)
        if conversation_id is None:
            return "gone"
    hold = _Hold(conversation_id, worker)
    if not await hold.lock():
        return "busy"
    locked = time.perf_counter()
    prefetch = None
    if business_id and text:
        handed = functools.partial(query_vectors.take, query_vector_token) if query_vector_token else None
        prefetch = agent.Prefetch.start(business_id, text, handed)
    try:
        loaded = await _claim_and_load(message_id, worker, conversation_id)
        if isinstance(loaded, str):
            return loaded
        claim, agent_row = loaded
        turns = [Turn(role=m.role, text=m.text) for m in claim.turns]
        timings: dict[str, Any] = {
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
            await layer.group_send(
                group, {"type": "message.created", "message": message_payload(claim.reply)}
            )
            await layer.group_send(group, _done_event(claim.reply.pk, said, "done", []))
            return "handoff"

        # Only a taken-over reply can have streamed already: its numbering goes on from the log.
        seq = await streams.log_last_seq(claim.reply.pk) if claim.taken_over else 0
        stream = _Stream(group, claim.reply.pk, seq, reset=seq > 0)
        hold.renew(claim.customer.pk)
        return await _stream_reply(
            claim, agent_row, turns, question, stream, timings, started, hold, prefetch
        )
    except asyncio.CancelledError:
        if hold.lost:
            logger.warning("reply to message %s: another worker took the claim over", message_id)
            return "lost"
        raise
    finally:
        if prefetch is not None:
            prefetch.cancel()
        await hold.release()


def _done_event(message_id: int, text: str, status: str, cards: list[Any]) -> dict[str, Any]:
    """The end of a reply as the customer's socket gets it: what the customer reads, nothing else (the
    grounding result and the timings stay on the stored message, for the business and for benchmarks)."""
    return {"type": "message.done", "message_id": message_id, "text": text, "status": status, "cards": cards}


async def _stream_reply(
    claim: ReplyClaim,
    agent_row: Any,
    turns: list[Turn],
    question: str,
    stream: _Stream,
    timings: dict[str, Any],
    started: float,
    hold: _Hold,
    prefetch: agent.Prefetch | None,
) -> str:
    reply_id = claim.reply.pk
    setup_started = time.perf_counter()
    cancels = streams.cancel_watch()
    stop_asked = await cancels.watch(reply_id)
    timings["stream_setup"] = round((time.perf_counter() - setup_started) * 1000, 2)
    final: agent.Done | None = None
    citations: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}

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
                        timings["first_token"] = round((time.perf_counter() - started) * 1000, 2)
                    if not stream.announced:
                        stream.announce_with_first_delta(claim.reply)
                    await stream.add(event.text)
                elif isinstance(event, agent.Citations):
                    citations = [asdict(c) for c in event.items]
                elif isinstance(event, agent.Usage):
                    usage = {
                        "prompt_tokens": event.prompt_tokens,
                        "completion_tokens": event.completion_tokens,
                    }
                else:
                    final = event

    async def watch() -> None:
        # A stop asked before the watch began left its key (checked here, beside the stream's start).
        try:
            if await streams.cancel_requested(reply_id):
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

    if final is not None and not stopped:
        timings.update({k: v for k, v in final.timings.items() if k != "first_token"})
        status, text, cards, grounding, error = (
            Message.Status.DONE,
            final.text,
            final.cards,
            final.grounding,
            "",
        )
        if final.no_results:
            grounding = {**grounding, "no_results": True}
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
    return {Message.Status.DONE: "done", Message.Status.CUT: "cut"}.get(status, "failed")


def stream_worker(claim: ReplyClaim) -> str:
    """The worker id the claim was made with (kept on the customer message)."""
    return claim.customer.claimed_by or ""
