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
    ``limit``.

    A sliding-window estimate: this window's count plus the previous window's, weighted by the share of it
    still inside the last ``window`` seconds. A plain fixed window would let a burst through twice, once on
    each side of a window's boundary."""
    now = time.time()
    bucket = int(now // window)
    current, previous = f"rl:{key}:{bucket}", f"rl:{key}:{bucket - 1}"
    pipe = redis().pipeline()
    pipe.incr(current)
    pipe.expire(current, 2 * window + 1)
    pipe.get(previous)
    count, _, before = await pipe.execute()
    still_inside = 1 - (now - bucket * window) / window
    if int(count) + int(before or 0) * still_inside <= limit:
        return True
    # Refused: not counted, so that retrying while limited does not stretch the limit into the next window.
    await redis().decr(current)
    return False


async def unhit(key: str, *, window: int = 60) -> None:
    """Take back one event (it was refused by a later limit, so nothing happened)."""
    await redis().decr(f"rl:{key}:{int(time.time() // window)}")


async def message_allowed(business_id: int, visitor_id: str) -> str | None:
    """None when a message may be stored, else the error code."""
    if not await hit(f"v:{business_id}:{visitor_id}", limit=settings.CHAT_VISITOR_MESSAGES_PER_MINUTE):
        return "rate_limited"
    if not await hit(f"b:{business_id}", limit=settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE):
        await unhit(f"v:{business_id}:{visitor_id}")
        return "business_rate_limited"
    return None


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
