"""What a running reply holds: its conversation's lock (replies of one conversation in order) and, once
claimed, the lease on the customer message, renewed until the final save. Losing the lease to a takeover
cancels the reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings
from django.utils import timezone
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from common import aio
from common.redis import async_client
from messaging.replies.claim import claim_is_stale, reply_renew

logger = logging.getLogger(__name__)


def _lock_key(conversation_id: int) -> str:
    return f"reply-lock:{conversation_id}"


LOCK_WAIT_SECONDS = 1.0  # the previous reply of the conversation is usually saving its last words


class ConversationHold:
    """What a running reply holds: its conversation's lock (replies in order) and, once claimed, the lease on
    the customer message, renewed until the final save. Losing the lease to a takeover cancels the reply."""

    def __init__(self, conversation_id: int, worker: str) -> None:
        self.conversation_id = conversation_id
        self.worker = worker
        self.conversation_lock: Lock | None = None
        self.lost = False
        self.stopping = asyncio.Event()
        self.heartbeat: asyncio.Task[None] | None = None

    async def lock(self) -> bool:
        """Take the conversation's lock, waiting at most ``LOCK_WAIT_SECONDS``; False if another reply of the
        conversation holds it. The lock's token is the worker's id, so a holder whose process is gone (same
        host) is recognised and its lock taken over at once instead of after its expiry."""
        client, key = async_client(), _lock_key(self.conversation_id)
        lock = client.lock(
            key,
            timeout=settings.REPLY_LEASE_SECONDS,
            sleep=0.02,
            blocking_timeout=LOCK_WAIT_SECONDS,
            thread_local=False,  # one Lock object per hold, on one event loop
            raise_on_release_error=False,
        )
        if not await lock.acquire(blocking=False, token=self.worker):
            holder = await client.get(key)
            if isinstance(holder, bytes) and claim_is_stale(timezone.now(), holder.decode(), timezone.now()):
                with contextlib.suppress(LockError):  # another worker took it over first
                    await lock.do_release(holder)
            if not await lock.acquire(token=self.worker):
                return False
        self.conversation_lock = lock
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
                    if self.conversation_lock is not None:
                        await self.conversation_lock.reacquire()
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
        lock, self.conversation_lock = self.conversation_lock, None
        if lock is not None:
            await lock.release()
