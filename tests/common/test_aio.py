"""common.aio: the reply worker's long-lived event loop and its database threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection

from businesses.models import Business
from common import aio
from tests.factories import BusinessFactory


def _backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_replies_share_one_loop_whose_database_calls_run_on_its_threads() -> None:
    BusinessFactory()

    async def reply_like() -> tuple[int, str, bool, int]:
        thread = await aio.database(lambda: threading.current_thread().name)
        count = await aio.database(Business.objects.count)
        return id(asyncio.get_running_loop()), thread, aio.on_worker_loop(), count

    first, second = aio.run(reply_like()), aio.run(reply_like())
    assert first[0] == second[0]  # the same loop: its connections stay warm between replies
    assert first[1].startswith("db") and first[2] and first[3] == 1
    assert not aio.on_worker_loop()  # this thread is not the loop's


@pytest.mark.django_db(transaction=True)
def test_stop_closes_the_database_threads_connections() -> None:
    async def many_queries() -> None:
        await asyncio.gather(*(aio.database(Business.objects.count) for _ in range(16)))

    aio.run(many_queries())
    opened = _backends()
    aio.stop()
    assert _backends() < opened
    assert aio.run(aio.database(Business.objects.count)) == 0  # a later call starts a new loop
