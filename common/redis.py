"""The project's Redis clients, and their one timeout policy.

Every app talks to the same Redis (``settings.REDIS_URL``): channel layer, rate limits, reply streams, the
pool's state, import progress. Each call gets an answer or an error within ``settings.REDIS_COMMAND_TIMEOUT``
seconds and a connection within ``REDIS_CONNECT_TIMEOUT`` (the broker and the channel layer use the same
two settings): a Redis that hangs (a paused VM, a dropped link) must not
hang a reply, a login or a health check with it. Callers decide what an error means for them (fail open
for a rate limit, retry for a reply).

Blocking reads that wait longer than the command timeout (a pub/sub listener) pass their own timeout per
read instead (``PubSub.get_message(timeout=...)``), which redis-py honours over the socket timeout.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis as redis_sync
import redis.asyncio as redis_async
from django.conf import settings

_sync_clients: dict[str, redis_sync.Redis] = {}
_sync_lock = threading.Lock()
# An asyncio connection belongs to the loop that opened it (a Celery task runs each reply in a loop of its
# own), so each running loop gets its own client.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis_async.Redis] = (
    weakref.WeakKeyDictionary()
)


def sync_client(url: str | None = None) -> redis_sync.Redis:
    """The process's client for ``url`` (default ``settings.REDIS_URL``); its connection pool is
    thread-safe, so threads share it."""
    url = url or settings.REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        with _sync_lock:
            client = _sync_clients.get(url)
            if client is None:
                # Idle pooled connections are checked before use, so one that Redis dropped (a restart)
                # is reopened instead of failing the next command.
                client = redis_sync.Redis.from_url(
                    url,
                    socket_timeout=settings.REDIS_COMMAND_TIMEOUT,
                    socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
                    health_check_interval=30,
                )
                _sync_clients[url] = client
    return client


def async_client() -> redis_async.Redis:
    """The running event loop's client for ``settings.REDIS_URL``."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # No health_check_interval here: redis-py's asyncio health check runs a PING inside the next
        # command, and a reply cancelled in between left that connection waiting for ever (seen as replies
        # whose end never came). A dropped connection raises ConnectionError instead, which callers handle.
        client = redis_async.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_COMMAND_TIMEOUT,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        )
        _async_clients[loop] = client
    return client


async def close_async_client() -> None:
    """Close the running loop's client, before a loop of its own (a reply task's) ends."""
    client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
