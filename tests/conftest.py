"""Test foundation: real PostgreSQL+pgvector and Redis (embedded unless DATABASE_URL/REDIS_URL are set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib

from devstack import services

# Each area of the suite keeps its shared fixtures in its own module.
pytest_plugins = [
    "tests.fixtures.inference",
    "tests.fixtures.catalogs",
    "tests.fixtures.feeds",
    "tests.fixtures.stack",
    "tests.fixtures.meta",
    "tests.fixtures.media",
    "tests.fixtures.browser",
    "tests.fixtures.api",
]


def pytest_configure(config: pytest.Config) -> None:
    services.ensure_core_services()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis_lib.Redis]:
    from django.conf import settings

    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(redis_client: redis_lib.Redis) -> None:
    # Each test starts from an empty Redis database of its own number (BIZAGENT_REDIS_DB in the test command).
    redis_client.flushdb()


@pytest.fixture(scope="session", autouse=True)
def _reply_loop_stopped(django_db_setup: None) -> Iterator[None]:
    # A task called in this process (reply(...)) starts the reply loop, whose database threads keep their
    # connections, as does asgiref's thread for consumers run here: close them before the database is dropped.
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    from common import aio

    yield
    aio.stop()
    asyncio.run(sync_to_async(connections.close_all)())
