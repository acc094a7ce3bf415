"""A reply's one retry policy: what retries where, for how long, and what the customer sees meanwhile.

Written down for operators in docs/operations.md ("Retries"); this module is where the code says it.

1. The model. The inference pool (``inference.tries``) tries a chat completion on other endpoints until its
   first token, up to ``LLAMA_MAX_TRIES`` within ``LLAMA_REPLY_TIMEOUT``; a model that still fails leaves the
   answer composed from the data (``agents.respond``). Nothing here retries a model failure: the reply is
   ``done`` with the catalog's answer.
2. A busy conversation or message (another live worker holds its lock or its claim): the task comes back
   every ``BUSY_RETRY_SECONDS`` for two leases (``busy_retries``): by then the holder has finished or its
   lease has run out and the claim is taken over. The customer sees the reply of the holder.
3. A transient database or Redis error (``is_transient``): the task is tried again ``TRANSIENT_RETRIES``
   times after ``transient_backoff`` (1, 2, 4 s). An error after the claim first releases the claim
   (``reply_release``), so the next try takes it over in the same reply row, its stream starting again
   (``reset``). The customer sees the reply start over.
4. Anything else after the claim, or a transient error on the last try: the reply row is finished
   ``failed`` with the text already shown (the widget says the reply could not finish and offers to ask
   again); the customer's message counts as answered by it. Nothing is retried.
5. The sweeper (``messaging.tasks.sweep_replies``, every ``REPLY_SWEEP_SECONDS``) re-queues a customer
   message still ``received`` once its ``reply_due_at`` has passed and its claim is free or stale: a lost
   publish, a task that gave up, a worker killed mid-reply (the lease ran out, or its process on this host
   is gone). Each re-queue moves ``reply_due_at`` on by ``REQUEUE_AFTER``, so a message is re-queued once
   per period; the claim makes sure it is answered once. After ``GIVE_UP_AFTER`` the sweeper stops: a reply
   row left ``streaming`` is finished ``failed`` (``replies_abandon``).
"""

from __future__ import annotations

import datetime as dt

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

BUSY_RETRY_SECONDS = 0.25
TRANSIENT_RETRIES = 3
# How long a queued reply may take to start before the sweeper assumes its publish was lost (on top of the
# burst wait): a reply waiting in a long queue is queued twice at worst, and the claim answers it once.
QUEUED_GRACE = dt.timedelta(seconds=10)
REQUEUE_AFTER = dt.timedelta(seconds=30)
GIVE_UP_AFTER = dt.timedelta(minutes=10)

# Django wraps the driver's errors, but the one-trip claim's pipeline raises psycopg's own.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


def busy_retries() -> int:
    """How many times a busy reply comes back: for two leases."""
    return int(2 * settings.REPLY_LEASE_SECONDS / BUSY_RETRY_SECONDS)


def is_transient(error: BaseException) -> bool:
    """A database or Redis error that a later try may not meet (a restart, a dropped connection, a
    statement timeout)."""
    return isinstance(error, _TRANSIENT)


def transient_backoff(failed_tries: int) -> float:
    """Seconds before the next try, after ``failed_tries`` (1, 2, ...) transient failures."""
    return float(2 ** max(0, failed_tries - 1))


def reply_due_at(received_at: dt.datetime, burst_wait_seconds: float) -> dt.datetime:
    """When the sweeper may queue the reply to a message received at ``received_at`` again."""
    return received_at + dt.timedelta(seconds=burst_wait_seconds) + QUEUED_GRACE
