"""The Redis side of a streamed reply: its delta log (for resume) and its cancel signal (for stop).

Per agent message id:
- ``reply:<id>:log``: a list of JSON entries ``{"seq", "text", "reset"}`` in seq order, appended *before*
  each group send, so that a client that reconnects (to any ASGI process) reads what it missed and then
  takes the live stream, dropping any seq it already has;
- ``reply:<id>:cancel``: set by ``stop``, and published on ``<PUBSUB_PREFIX>:reply:<id>:cancel`` (pub/sub
  is server-wide: the prefix keeps deployments on other Redis databases out). A worker's event loop keeps
  one subscription to every reply's cancel channel (``CancelWatch``); its streaming replies wait on an
  event each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref

from channels.layers import get_channel_layer
from django.conf import settings

from common.redis import async_client
from messaging.events import DeltaEntry, ReplyDeltaEvent

logger = logging.getLogger(__name__)

LOG_TTL_SECONDS = 3600


def log_key(message_id: int) -> str:
    return f"reply:{message_id}:log"


def cancel_key(message_id: int | str) -> str:
    return f"reply:{message_id}:cancel"


async def log_append(
    message_id: int, entry: DeltaEntry, *, then_send: tuple[str, ReplyDeltaEvent] | None = None
) -> None:
    """Append ``entry`` to the reply's log; with ``then_send`` (a group, an event), send the event to the group
    in the same round trip. Redis runs a pipeline's commands in order, so the entry is logged before the event
    is published: a client resuming from the log never misses what the group had. The event is published as
    the channel layer's own ``group_send`` would (same server, same channel name, its serializer)."""
    pipe = async_client().pipeline(transaction=False)
    pipe.rpush(log_key(message_id), json.dumps(entry))
    pipe.expire(log_key(message_id), LOG_TTL_SECONDS)
    if then_send is not None:
        group, event = then_send
        layer = get_channel_layer()
        # The layer's own naming and serializer (channels_redis 4's pub/sub layer; tests cover the delivery).
        pipe.publish(layer._get_group_channel_name(group), layer.serialize(event))
    await pipe.execute()


async def log_read(message_id: int, after_seq: int = 0) -> list[DeltaEntry]:
    """Entries with ``seq > after_seq`` (a reset entry starts the text over: keep from the last one)."""
    raw = await async_client().lrange(log_key(message_id), 0, -1)
    return [entry for entry in (json.loads(r) for r in raw) if int(entry["seq"]) > after_seq]


async def log_last_seq(message_id: int) -> int:
    last = await async_client().lindex(log_key(message_id), -1)
    return int(json.loads(last)["seq"]) if last else 0


def cancel_channel(message_id: int | str) -> str:
    """Where a stop is published (``*``: the pattern of every reply's)."""
    return f"{settings.PUBSUB_PREFIX}:{cancel_key(message_id)}"


async def cancel_request(message_id: int) -> None:
    client = async_client()
    await client.set(cancel_key(message_id), "1", ex=LOG_TTL_SECONDS)
    await client.publish(cancel_channel(message_id), "stop")


async def cancel_requested(message_id: int) -> bool:
    return bool(await async_client().exists(cancel_key(message_id)))


RESUBSCRIBE_SECONDS = 1.0
# How long one read of the subscription waits for a message. Each read passes it explicitly: the client's
# command timeout would otherwise end an idle subscription every few seconds.
LISTEN_SECONDS = 30.0


class CancelWatch:
    """One pattern subscription per event loop to every reply's cancel channel: a streaming reply waits on an
    ``asyncio.Event`` instead of opening a subscription (a Redis connection, closed after each use) of its
    own before its first token."""

    def __init__(self) -> None:
        self.waiters: dict[int, set[asyncio.Event]] = {}
        self.subscribed = asyncio.Event()
        self.listener = asyncio.create_task(self._listen())

    async def watch(self, message_id: int) -> asyncio.Event:
        """The event set when ``stop`` is asked for ``message_id`` from now on. A stop asked before left its
        key: the caller checks ``cancel_requested`` itself, beside its own work (a round trip off its path)."""
        await self.subscribed.wait()
        event = asyncio.Event()
        self.waiters.setdefault(message_id, set()).add(event)
        return event

    def unwatch(self, message_id: int, event: asyncio.Event) -> None:
        events = self.waiters.get(message_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiters[message_id]

    def _fire(self, message_id: int) -> None:
        for event in self.waiters.get(message_id, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            pubsub = async_client().pubsub()
            try:
                await pubsub.psubscribe(cancel_channel("*"))
                # What was asked while the subscription was down (a Redis restart) is in the cancel keys.
                for message_id in list(self.waiters):
                    if await cancel_requested(message_id):
                        self._fire(message_id)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_SECONDS)
                    if message is not None and message.get("type") == "pmessage":
                        channel = message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                        number = channel.rsplit(":", 2)[-2]  # <prefix>:reply:<id>:cancel
                        if number.isdigit():
                            self._fire(int(number))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("cancel subscription lost; subscribing again", exc_info=True)
                self.subscribed.clear()
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())

    async def close(self) -> None:
        self.listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.listener


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CancelWatch] = weakref.WeakKeyDictionary()


def cancel_watch() -> CancelWatch:
    """The running event loop's ``CancelWatch``, started on first use."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = CancelWatch()
    return watch


async def close_cancel_watch() -> None:
    """Stop the running loop's watch (a short-lived loop, before it ends)."""
    watch = _watches.pop(asyncio.get_running_loop(), None)
    if watch is not None:
        await watch.close()
