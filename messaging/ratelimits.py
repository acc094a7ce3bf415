"""Rate limits for the chat websocket, counted in Redis so that every ASGI process shares them."""

from __future__ import annotations

import asyncio
import time
import weakref

import redis.asyncio as aioredis
from django.conf import settings

# Connections belong to the loop that opened them (a Celery task runs each reply in a loop of its own).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def redis() -> aioredis.Redis:
    """An asyncio Redis client for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        _clients[loop] = client
    return client


async def hit(key: str, *, limit: int, window: int = 60) -> bool:
    """Count one event; False (and not counted) when the rate over the last ``window`` seconds would go over
    ``limit``."""
    return await hit_all([(key, limit)], window=window) is None


async def hit_all(limits: list[tuple[str, int]], *, window: int = 60) -> int | None:
    """Count one event against each ``(key, limit)``, in one round trip. Returns the index of the first limit
    the event would take over (then none of them counts it: retrying while limited does not stretch a limit
    into the next window), or None.

    Each is a sliding-window estimate: this window's count plus the previous window's, weighted by the share
    of it still inside the last ``window`` seconds. A plain fixed window would let a burst through twice,
    once on each side of a window's boundary."""
    now = time.time()
    bucket = int(now // window)
    currents = [f"rl:{key}:{bucket}" for key, _ in limits]
    pipe = redis().pipeline()
    for (key, _), current in zip(limits, currents, strict=True):
        pipe.incr(current)
        pipe.expire(current, 2 * window + 1)
        pipe.get(f"rl:{key}:{bucket - 1}")
    results = await pipe.execute()
    still_inside = 1 - (now - bucket * window) / window
    for index, (_, limit) in enumerate(limits):
        count, _, before = results[3 * index : 3 * index + 3]
        if int(count) + int(before or 0) * still_inside > limit:
            undo = redis().pipeline()
            for current in currents:
                undo.decr(current)
            await undo.execute()
            return index
    return None


async def message_allowed(business_id: int, visitor_id: str) -> str | None:
    """None when a message may be stored, else the error code."""
    refused = await hit_all(
        [
            (f"v:{business_id}:{visitor_id}", settings.CHAT_VISITOR_MESSAGES_PER_MINUTE),
            (f"b:{business_id}", settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE),
        ]
    )
    return None if refused is None else ("rate_limited", "business_rate_limited")[refused]


async def connection_open(business_id: int, visitor_id: str, channel_name: str) -> bool:
    """Register a socket of a visitor; False (and not registered) when it has too many open."""
    key = f"conns:{business_id}:{visitor_id}"
    now = time.time()
    pipe = redis().pipeline()
    # Entries of processes that died without a disconnect fall out after a day.
    pipe.zremrangebyscore(key, 0, now - 86400)
    pipe.zadd(key, {channel_name: now})
    pipe.zcard(key)
    pipe.expire(key, 86400)
    _, _, count, _ = await pipe.execute()
    if int(count) > settings.CHAT_VISITOR_MAX_CONNECTIONS:
        await redis().zrem(key, channel_name)
        return False
    return True


async def connection_close(business_id: int, visitor_id: str, channel_name: str) -> None:
    await redis().zrem(f"conns:{business_id}:{visitor_id}", channel_name)
