"""What a running reply holds: its conversation's lock (replies of one conversation in order) and, once
claimed, the lease on the customer message, renewed until the final save. Losing the lease to a takeover
cancels the reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from django.conf import settings
from django.utils import timezone

from common import aio
from common.redis import async_client
from messaging.replies.claim import claim_is_stale, reply_renew

logger = logging.getLogger(__name__)


def _lock_key(conversation_id: int) -> str:
    return f"reply-lock:{conversation_id}"


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
LOCK_WAIT_SECONDS = 1.0  # the previous reply of the conversation is usually saving its last words


class ConversationHold:
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
        client, key, ttl = async_client(), _lock_key(self.conversation_id), settings.REPLY_LEASE_SECONDS
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
                    held = await aio.database(reply_renew, customer_id=customer_id, worker=self.worker)
                    await async_client().set(
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
            await async_client().eval(_RELEASE, 1, _lock_key(self.conversation_id), self.worker)
