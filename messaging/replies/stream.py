"""A reply's text on its way to the conversation's sockets: coalesced (one group send per
``REPLY_COALESCE_MS``), numbered per message (``seq``), appended to the Redis resume log before each send
(``messaging.streams``), and saved about every ``PARTIAL_SAVE_SECONDS`` (a takeover resumes from it)."""

from __future__ import annotations

import asyncio
import time

from channels.layers import get_channel_layer
from django.conf import settings

from common import aio
from messaging import streams
from messaging.events import DeltaEntry, MessagePayload, ReplyDeltaEvent
from messaging.models import Message
from messaging.replies.claim import reply_save_partial
from messaging.selectors import message_payload

PARTIAL_SAVE_SECONDS = 0.5


class ReplyStream:
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
        self.created: MessagePayload | None = None

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
            await aio.database(reply_save_partial, reply_id=self.message_id, text="".join(self.parts))

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        self.timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            if not self.buffer:
                return
            self.seq += 1
            entry: DeltaEntry = {"seq": self.seq, "text": "".join(self.buffer), "reset": self.reset}
            self.buffer.clear()
            self.reset = False
            event: ReplyDeltaEvent = {
                "type": "reply.delta",
                "message_id": self.message_id,
                "sent_at": time.time(),
                "seq": entry["seq"],
                "text": entry["text"],
                "reset": entry["reset"],
            }
            if self.created is not None:
                event["created"], self.created = self.created, None
            # Logged, then sent, in one round trip.
            await streams.log_append(self.message_id, entry, then_send=(self.group, event))
            self.sends += 1
            self.last_send = time.monotonic()

    async def close(self) -> None:
        """Send what is buffered. A pending coalescing timer is awaited, not cancelled (it sends within one
        interval): cancelled inside its send, it would cut a Redis pipeline mid-flight."""
        if self.timer is not None:
            await self.timer
            self.timer = None
        await self.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)
