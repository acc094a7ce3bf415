"""The pool's HTTP transport: one httpx client per event loop, for every request to an inference server.

Connections belong to the loop that opened them (a worker's long-lived reply loop, a test's async_to_sync,
the ASGI server's), so a client is never shared across loops, and a closed loop's client is never reused.
Health probes are sync and open their own short-lived clients (health.py).
"""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def http_client() -> httpx.AsyncClient:
    """This event loop's client, created on first use (and again if it was closed)."""
    loop = asyncio.get_running_loop()
    http = _clients.get(loop)
    if http is None or http.is_closed:
        # The client's connections refer to their loop, so a weak key alone never lets go: drop the
        # clients of loops that have closed (their sockets close when collected; close_clients() is cleaner).
        for old in [old for old in list(_clients) if old.is_closed()]:
            _clients.pop(old, None)
        http = httpx.AsyncClient(
            # Read timeouts are ours (first token, idle, deadline); httpx only bounds connect and write.
            timeout=httpx.Timeout(connect=settings.LLAMA_CONNECT_TIMEOUT, read=None, write=10.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30),
            # Inference servers are internal: no proxy from the environment between workers and GPUs.
            trust_env=False,
        )
        _clients[loop] = http
    return http


async def close_clients() -> None:
    """Close this event loop's connections (call before a loop you created ends, e.g. in a task)."""
    http = _clients.pop(asyncio.get_running_loop(), None)
    if http is not None:
        await http.aclose()
