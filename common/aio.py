"""The process's long-lived event loop, and database calls from async code.

A reply is I/O bound: it waits on Redis, PostgreSQL and the inference pool. Run with ``async_to_sync`` per
task, each reply got a new thread, a new event loop and, since connections belong to the loop that opened
them, new connections to Redis, the channel layer and the pool before its first token. Instead, each worker
process runs one event loop in a daemon thread for its whole life; tasks submit their coroutine to it
(``run``) and block their own Celery thread on the result. Connections stay warm across replies and the
replies of a process share one loop. It is the process's one background loop: sync code that calls the
pool (catalog imports) and the ASGI server's hand-over of a question's embedding run their coroutines on it
too (``run``, ``submit``).

Database work from async code (the reply loop, the ASGI server's consumers and webhook view) runs on one
small pool of threads per process (``DB_THREADS``), each keeping its connection. Not asgiref's default for
thread-sensitive code, one thread per process: every websocket's and every reply's queries would wait in
line there behind each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child (Celery prefork) has the parent's objects but not their threads: it starts its own.
    global _loop, _loop_lock, _threads, _threads_lock
    _loop, _threads = None, None
    _loop_lock, _threads_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def database_threads() -> ThreadPoolExecutor:
    """This process's database threads, started on first use."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="db")
        return _threads


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's reply loop, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="reply-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on this process's loop and wait for its result (from a thread outside that loop: a
    Celery task, a catalog import)."""
    return asyncio.run_coroutine_threadsafe(coroutine, worker_loop()).result()


def submit(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coroutine`` on this process's loop and return at once (from another event loop, such as the
    ASGI server's: what the coroutine blocks on, a pool's sync Redis round trip, then holds this loop's
    thread, never the caller's)."""
    return asyncio.run_coroutine_threadsafe(coroutine, worker_loop())


def on_worker_loop() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def close_database_connections() -> None:
    """Close the connections the database threads hold (a test, before its database is dropped)."""
    with _threads_lock:
        threads = _threads
    if threads is None:
        return
    count = threads._max_workers  # what it was made with (DB_THREADS then)
    # One job per thread, each held at the barrier until all have one: every thread closes its own.
    barrier = threading.Barrier(count)

    def close() -> None:
        from django.db import connections

        barrier.wait(timeout=10)
        connections.close_all()

    for future in [threads.submit(close) for _ in range(count)]:
        future.result(timeout=15)


def stop() -> None:
    """Stop this process's reply loop and database threads, closing their connections (a worker's shutdown,
    the end of a test session: a connection left open would keep its database from being dropped)."""
    global _loop, _threads
    with _loop_lock:
        loop, _loop = _loop, None
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
    close_database_connections()
    with _threads_lock:
        threads, _threads = _threads, None
    if threads is not None:
        threads.shutdown(wait=True)


def _drop_if_closed_by_server() -> None:
    """Close this thread's kept connections that the server has closed since their last use (a restart,
    ``pg_terminate_backend``), so that the call about to run opens a new one instead of failing.

    Between calls no answer is pending, so a readable socket means the server said something on its own: its
    goodbye before closing, or end of file. That costs one ``select``, not a round trip; only then does the
    health check's round trip tell a goodbye from a notice."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None:
            continue
        try:
            readable = bool(select.select([raw.fileno()], [], [], 0)[0])
            usable = not readable or connection.is_usable()
        except Exception:
            usable = False  # a socket the driver has already closed
        if not usable:
            with contextlib.suppress(Exception):
                connection.close()


def _keeping_connections(fn: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        from django.db import connections

        _drop_if_closed_by_server()
        try:
            return fn(*args, **kwargs)
        finally:
            # A connection broken by an error (a database restart) is dropped here, so the thread's next
            # call reconnects; a healthy one is kept for the next call.
            for connection in connections.all(initialized_only=True):
                if connection.errors_occurred:
                    connection.close_if_unusable_or_obsolete()

    return call


async def database(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the synchronous (ORM) ``fn`` on this process's database threads.

    Unlike channels' ``database_sync_to_async``, it does not sweep the thread's connections before and after
    every call (with health checks on, that is one more round trip per call): a connection is dropped when
    an error has made it unusable or the server has closed it (``_drop_if_closed_by_server``: the first call
    after a database restart works), and kept otherwise."""
    call = _keeping_connections(fn)
    return await sync_to_async(call, thread_sensitive=False, executor=database_threads())(*args, **kwargs)
