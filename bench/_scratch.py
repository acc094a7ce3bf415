"""A scratch PostgreSQL database for a benchmark: created, migrated, and dropped afterwards.

Benchmarks never touch the development database's rows: each runs in a database of its own name on the same
server (the embedded one unless DATABASE_URL is set).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")  # settings default to production, which needs real secrets
    # Building a scratch catalog of 100k's of rows and its indexes runs statements longer than the
    # application's statement timeout.
    os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")
    if not os.environ.get("DATABASE_URL"):
        from devstack import services

        services.ensure_postgres()
    if not os.environ.get("REDIS_URL"):
        from devstack import services

        # The import service publishes progress to Redis.
        services.ensure_redis()
    import django

    django.setup()


@contextmanager
def scratch_database(name: str, *, keep: bool = False, reuse: bool = False) -> Iterator[bool]:
    """Point Django's default connection at database ``name`` (migrated) for the block's duration.

    The database is created fresh, unless ``reuse`` and it exists (kept by an earlier ``keep`` run); the
    block receives whether it was reused. It is dropped afterwards unless ``keep``.
    """
    from django.core.management import call_command
    from django.db import connection

    def admin(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    original = connection.settings_dict["NAME"]
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        reused = reuse and cursor.fetchone() is not None
    if not reused:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{name}"')
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield reused
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original
        if not keep:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.close()
