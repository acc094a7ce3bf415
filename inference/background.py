"""The pool's own event loop, in a daemon thread per process, for callers outside an event loop or off it.

Sync callers (catalog imports) reuse its connections instead of opening a loop and a client per call
(``run_sync``), and async callers that must not hold their own loop hand a pool coroutine to it
(``run_in_background``: the pool's blocking Redis round trips then hold this thread). Recreated after a fork
(Celery prefork children).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_runner_lock = threading.Lock()
_runner: tuple[int, asyncio.AbstractEventLoop] | None = None


def _runner_loop() -> asyncio.AbstractEventLoop:
    global _runner
    with _runner_lock:
        if _runner is None or _runner[0] != os.getpid() or _runner[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="llama-sync", daemon=True).start()
            _runner = (os.getpid(), loop)
        return _runner[1]


def run_in_background(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start a pool coroutine on the pool's own loop thread and return at once: its blocking Redis round
    trips (routing, metrics) then hold that thread, never the caller's event loop."""
    return asyncio.run_coroutine_threadsafe(coroutine, _runner_loop())


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a pool coroutine from sync code (not from inside a running event loop's thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, _runner_loop()).result()
