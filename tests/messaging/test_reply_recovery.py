"""No customer message lost or left half-answered (messaging.replies.policy): the message row is its reply's
outbox, the sweeper queues lost replies again, errors after the claim never leave a row streaming, transient
database and Redis errors are retried, and a database thread's first query after its connection was killed
works. In this process, against the real PostgreSQL, the real Redis broker and the test inference server."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as redis_lib
from asgiref.sync import async_to_sync
from celery import current_app
from django.conf import settings
from django.db import OperationalError, connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from agents import respond as agent
from common import aio
from messaging import selectors
from messaging.models import Message
from messaging.replies import engine, policy
from messaging.replies.hold import ConversationHold
from messaging.replies.sweep import replies_abandon, replies_sweep
from messaging.services import message_receive
from messaging.tasks import reply as reply_task
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.stack import declare_queues
from tests.metrics import metric_value

pytestmark = pytest.mark.django_db(transaction=True)

STOVE = "Pocket gas stove: 39.90 EUR, in stock."


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def receive(business: Any, text: str, **kwargs: Any) -> Message:
    kwargs.setdefault("channel", "whatsapp")
    kwargs.setdefault("contact_external_id", "4915550001")
    message = message_receive(business=business, text=text, **kwargs)
    assert message is not None
    return message


def queued_replies(client: redis_lib.Redis) -> list[tuple[list[Any], dict[str, Any]]]:
    """The reply tasks waiting on the real broker's ``replies`` queue: (args, kwargs) each, oldest first."""
    found = []
    for raw in reversed(client.lrange("replies", 0, -1)):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] in ("messaging.tasks.reply", "messaging.tasks.sweep_replies")
        if envelope["headers"]["task"] == "messaging.tasks.reply":
            args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            found.append((args, kwargs))
    return found


def run_queued(args: list[Any], kwargs: dict[str, Any]) -> str:
    return async_to_sync(engine.run_reply)(*args, **kwargs)


def past_due(message: Message) -> dt.datetime:
    message.refresh_from_db()
    assert message.reply_due_at is not None
    return message.reply_due_at + dt.timedelta(seconds=1)


def test_a_failed_publish_stores_the_message_and_the_sweeper_gets_it_answered(
    pool_server: Any, shop: Any, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare_queues()
    pool_server.script("The Pocket gas stove is 39.90 EUR.")

    def broker_down(*_: Any, **__: Any) -> None:
        raise BrokerError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(current_app, "send_task", broker_down)
    widget = {"channel": "widget", "contact_external_id": "v1"}
    before = timezone.now()
    message = receive(shop, "stove?", client_message_id="c1", **widget)
    # Stored, and the caller (the chat socket) is not told of the publish: the row is the outbox.
    assert (message.status, message.claimed_at) == ("received", None)
    assert message.reply_due_at is not None
    assert before + policy.QUEUED_GRACE <= message.reply_due_at <= timezone.now() + policy.QUEUED_GRACE
    # The widget's resend after a reconnect is a duplicate: stored once, nothing queued.
    resent = message_receive(
        business=shop, text="stove?", client_message_id="c1", channel="widget", contact_external_id="v1"
    )
    assert resent is None
    monkeypatch.undo()
    assert queued_replies(redis_client) == []
    # Not due yet: the sweeper leaves it (its task may still be on its way).
    assert replies_sweep() == []
    assert replies_sweep(now=past_due(message)) == [message.pk]
    [(args, kwargs)] = queued_replies(redis_client)
    assert args[0] == message.pk
    assert (kwargs["conversation_id"], kwargs["business_id"]) == (message.conversation_id, shop.pk)
    assert run_queued(args, kwargs) == "done"
    assert Message.objects.get(pk=message.pk).status == "answered"
    assert list(Message.objects.filter(role="agent").values_list("status", "text")) == [("done", STOVE)]


def test_the_sweeper_queues_each_stale_message_once_in_its_own_tenant(
    pool_server: Any, shop: Any, redis_client: redis_lib.Redis
) -> None:
    declare_queues()
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    other: Any = BusinessFactory()
    dead = f"{socket.gethostname()}:999999:dead"
    live = f"{socket.gethostname()}:{os.getpid()}:live"
    lost = receive(shop, "stove?")  # its publish was lost: never claimed
    killed = receive(shop, "stove?", contact_external_id="4915550002")  # its worker died mid-reply
    running = receive(shop, "stove?", contact_external_id="4915550003")  # a live reply
    elsewhere = receive(other, "hello", contact_external_id="4915550001")  # another tenant, same contact id
    answered = receive(shop, "hi", contact_external_id="4915550004")
    Message.objects.filter(pk=answered.pk).update(status="answered")
    later = max(past_due(m) for m in (lost, killed, running, elsewhere, answered))
    Message.objects.filter(pk=killed.pk).update(claimed_at=timezone.now(), claimed_by=dead)
    # Renewed just now (at the sweep's time), by a process that lives.
    Message.objects.filter(pk=running.pk).update(claimed_at=later, claimed_by=live)
    # The dead worker had started the reply: its row is streaming, half-written.
    Message.objects.create(
        business=shop,
        conversation_id=killed.conversation_id,
        channel="whatsapp",
        role="agent",
        status="streaming",
        text="Pocket gas",
        reply_to=killed,
    )
    redis_client.delete("replies")
    assert replies_sweep(now=later) == sorted([lost.pk, killed.pk, elsewhere.pk])
    # Exactly once: a second sweep (or a second sweeper) within REQUEUE_AFTER queues nothing.
    assert replies_sweep(now=later) == []
    assert replies_sweep(now=later + dt.timedelta(seconds=5)) == []
    queued = queued_replies(redis_client)
    # Each by its own id, with its own conversation and business: nothing crosses tenants.
    assert sorted((args[0], kw["conversation_id"], kw["business_id"]) for args, kw in queued) == sorted(
        (m.pk, m.conversation_id, m.business_id) for m in (lost, killed, elsewhere)
    )
    for args, kwargs in queued:
        assert run_queued(args, kwargs) == "done"
        # A duplicate task (the first publish was not lost after all) finds the message answered.
        assert run_queued(args, kwargs) == "answered"
    # The killed worker's reply was restarted in its own row and finished; the live one is untouched.
    assert list(Message.objects.filter(reply_to=killed).values_list("status", "text")) == [("done", STOVE)]
    assert Message.objects.filter(role="agent", conversation_id=elsewhere.conversation_id).count() == 1
    assert Message.objects.get(pk=running.pk).status == "received"
    assert not Message.objects.filter(reply_to=running).exists()
    assert Message.objects.filter(role="agent").count() == 3
    assert Message.objects.filter(business_id=other.pk, role="agent").count() == 1
    # Answered messages are done with; the live claim, once its lease has run out unrenewed, is due.
    assert replies_sweep(now=later + policy.REQUEUE_AFTER) == [running.pk]


def test_the_sweeper_gives_up_and_finishes_a_streaming_row(shop: Any) -> None:
    message = receive(shop, "stove?")
    expired = timezone.now() - policy.GIVE_UP_AFTER - dt.timedelta(minutes=1)
    Message.objects.filter(pk=message.pk).update(
        created_at=expired, claimed_at=expired, claimed_by="elsewhere:1:x"
    )
    row = Message.objects.create(
        business=shop,
        conversation_id=message.conversation_id,
        channel="whatsapp",
        role="agent",
        status="streaming",
        text="Pocket gas",
        reply_to=message,
    )
    assert replies_sweep() == []  # too old to queue again
    assert replies_abandon() == [row.pk]
    assert list(Message.objects.filter(pk=row.pk).values_list("status", "text")) == [("failed", "Pocket gas")]
    assert Message.objects.get(pk=message.pk).status == "answered"
    assert replies_abandon() == []


def _failing_respond(after: str, error: Exception, calls: list[int]) -> Any:
    """A respond() that streams ``after`` (if any), then fails with ``error``."""

    async def respond(**_: Any) -> AsyncIterator[Any]:
        calls.append(1)
        if after:
            yield agent.TextDelta(after)
        raise error

    return respond


def test_an_error_after_the_claim_finishes_the_reply_failed_with_what_was_shown(
    pool_server: Any, shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    failures = metric_value("bizagent_reply_failures_total", reason="error")
    failed = metric_value("bizagent_replies_total", outcome="failed")
    monkeypatch.setattr(agent, "respond", _failing_respond("Pocket gas stove", RuntimeError("boom"), calls))
    message = receive(shop, "stove?")
    assert async_to_sync(engine.run_reply)(message.pk) == "failed"
    assert metric_value("bizagent_reply_failures_total", reason="error") == failures + 1
    assert metric_value("bizagent_replies_total", outcome="failed") == failed + 1
    reply = Message.objects.get(reply_to=message)
    assert (reply.status, reply.text, reply.error) == ("failed", "Pocket gas stove", "RuntimeError: boom")
    assert Message.objects.get(pk=message.pk).status == "answered"
    # A reconnecting socket sees the failed reply with its text, not an empty streaming one.
    assert selectors.streaming_replies(shop, message.conversation_id) == []
    # Nothing said: the failed row is invisible in the history (the widget said it could not finish).
    second = receive(shop, "and the tent?")
    monkeypatch.setattr(agent, "respond", _failing_respond("", ValueError("bad"), calls))
    assert async_to_sync(engine.run_reply)(second.pk) == "failed"
    assert Message.objects.get(reply_to=second).status == "failed"
    history = selectors.conversation_history(shop, message.conversation_id)
    assert [(m.role, m.status) for m in history] == [
        ("customer", "answered"),
        ("agent", "failed"),
        ("customer", "answered"),
    ]


def test_a_transient_error_after_the_claim_releases_it_and_the_next_try_finishes_the_same_row(
    pool_server: Any, shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    calls: list[int] = []
    lost = OperationalError("terminating connection due to administrator command")
    monkeypatch.setattr(agent, "respond", _failing_respond("Pocket", lost, calls))
    message = receive(shop, "stove?")
    with pytest.raises(OperationalError):
        async_to_sync(engine.run_reply)(message.pk, may_retry=True)
    customer = Message.objects.get(pk=message.pk)
    # Released: the lease has run out, the row waits for the next try (or the sweeper).
    assert customer.status == "received"
    assert customer.claimed_at is not None
    assert timezone.now() - customer.claimed_at > dt.timedelta(seconds=settings.REPLY_LEASE_SECONDS)
    monkeypatch.undo()
    assert async_to_sync(engine.run_reply)(message.pk, may_retry=True) == "done"
    assert list(Message.objects.filter(role="agent").values_list("status", "text")) == [("done", STOVE)]


def test_the_reply_task_retries_transient_database_and_redis_errors_bounded(
    pool_server: Any, shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    real_claim, real_lock = engine.reply_claim, ConversationHold.lock
    failures = {"claim": 1, "lock": 1}

    def claim(**kwargs: Any) -> Any:
        if failures["claim"]:
            failures["claim"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_claim(**kwargs)

    async def lock(self: ConversationHold) -> bool:
        if failures["lock"]:
            failures["lock"] -= 1
            raise redis_lib.exceptions.ConnectionError("Connection reset by peer")
        return await real_lock(self)

    monkeypatch.setattr(engine, "reply_claim", claim)
    monkeypatch.setattr(ConversationHold, "lock", lock)
    message = receive(shop, "stove?")
    known = {"conversation_id": message.conversation_id, "business_id": shop.pk, "text": "stove?"}
    # Eagerly, as the worker runs it (retries included: Celery's apply runs them in turn, without waiting).
    assert reply_task.apply(args=[message.pk], kwargs=known).get() == "done"
    assert failures == {"claim": 0, "lock": 0}
    assert list(Message.objects.filter(role="agent").values_list("status", "text")) == [("done", STOVE)]

    # An error that does not go away: TRANSIENT_RETRIES more tries, then the reply is finished failed.
    calls: list[int] = []
    monkeypatch.setattr(agent, "respond", _failing_respond("", OperationalError("gone"), calls))
    second = receive(shop, "and the tent?")
    known["text"] = "and the tent?"
    assert reply_task.apply(args=[second.pk], kwargs=known).get() == "failed"
    assert len(calls) == 1 + policy.TRANSIENT_RETRIES
    assert list(Message.objects.filter(reply_to=second).values_list("status", "error")) == [
        ("failed", "OperationalError: gone")
    ]
    assert [policy.transient_backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_a_database_thread_works_on_its_first_query_after_its_connection_was_killed() -> None:
    threads = settings.DB_THREADS
    barrier = threading.Barrier(threads)

    def backend_pid() -> int:
        # Held at the barrier until every thread has one call: each thread opens and keeps its connection.
        barrier.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    async def on_every_thread() -> list[int]:
        return list(await asyncio.gather(*(aio.database(backend_pid) for _ in range(threads))))

    before = aio.run(on_every_thread())
    assert len(set(before)) == threads
    # As a database restart does to every kept connection.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM unnest(%s) pid) t", [before]
        )
        # pg_terminate_backend only signals the backends: wait until they are gone, as after a restart.
        for _ in range(200):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [before])
            if not cursor.fetchone()[0]:
                break
            time.sleep(0.02)
    after = aio.run(on_every_thread())
    assert len(set(after)) == threads and not set(after) & set(before)
