"""The worker's long-lived event loop, and database calls from async code.

A reply is I/O bound: it waits on Redis, PostgreSQL and the inference pool. Run with ``async_to_sync`` per
task, each reply got a new thread, a new event loop and, since connections belong to the loop that opened
them, new connections to Redis, the channel layer and the pool before its first token. Instead, each worker
process runs one event loop in a daemon thread for its whole life; tasks submit their coroutine to it
(``run``) and block their own Celery thread on the result. Connections stay warm across replies and the
replies of a process share one loop.

Database work from that loop runs on a small pool of threads of its own (each keeps its connection between
replies); from any other loop (the ASGI server's, a test's ``async_to_sync``) it runs where Django's
``sync_to_async`` runs it by default.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_started = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child (Celery prefork) has the parent's loop object but not its thread: start its own.
    global _loop, _started
    _loop = None
    _started = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's reply loop, started on first use."""
    global _loop
    with _started:
        if _loop is None:
            loop = asyncio.new_event_loop()
            loop.set_default_executor(
                ThreadPoolExecutor(max_workers=settings.REPLY_DB_THREADS, thread_name_prefix="reply-db")
            )
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="reply-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def stop() -> None:
    """Stop this process's reply loop, if it runs, closing its database threads' connections (a worker's
    shutdown, the end of a test session: a connection left open would keep its database from being dropped)."""
    global _loop
    with _started:
        loop, _loop = _loop, None
    if loop is None:
        return
    threads = settings.REPLY_DB_THREADS
    # One job per thread, each held at the barrier until all have one: every thread closes its own.
    barrier = threading.Barrier(threads)

    def close_connections() -> None:
        from django.db import connections

        connections.close_all()
        barrier.wait(timeout=10)

    async def close_all() -> None:
        await asyncio.gather(*(loop.run_in_executor(None, close_connections) for _ in range(threads)))
        await loop.shutdown_default_executor()

    asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on this process's reply loop and wait for its result (from a worker thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, worker_loop()).result()


def on_worker_loop() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def _keeping_connections(fn: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        from django.db import connections

        try:
            return fn(*args, **kwargs)
        finally:
            # A connection broken by an error (a database restart) is dropped here, so the thread's next
            # call reconnects; a healthy one is kept for the next reply.
            for connection in connections.all(initialized_only=True):
                if connection.errors_occurred:
                    connection.close_if_unusable_or_obsolete()

    return call


async def database(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the synchronous (ORM) ``fn`` without blocking the event loop.

    Unlike channels' ``database_sync_to_async``, it does not sweep the thread's connections before and after
    every call (with health checks on, that is one more round trip per call): a connection is dropped when
    an error has made it unusable, and kept otherwise."""
    call = _keeping_connections(fn)
    return await sync_to_async(call, thread_sensitive=not on_worker_loop())(*args, **kwargs)
