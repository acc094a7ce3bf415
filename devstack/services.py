"""The embedded defaults: PostgreSQL+pgvector, Redis and a llama.cpp server started from PyPI packages.

Each service runs from a folder under ``BIZAGENT_DATA_DIR`` (default ``.data/``) and is shared by every
process of the project on this machine through handles (``devstack.handles``; PostgreSQL through pgserver's
own): the first process that needs a service starts it, the last one to let go stops it. This module is
what a process calls (``ensure_core_services``, ``ensure_llama``, ``release_all``, ``supervised``) and
what it holds; how each server starts is in ``devstack.postgres``, ``devstack.redis_server`` and
``devstack.llama``. Nothing here runs when the matching variable (``DATABASE_URL``, ``REDIS_URL``,
``LLAMA_POOL``) points at a real server.
"""

from __future__ import annotations

import os

from devstack import paths, postgres
from devstack.llama import LlamaService
from devstack.redis_server import RedisService
from devstack.supervisor import Supervised

# What this process holds: the services it has taken a handle on, and pgserver's server for PostgreSQL.
_redis = RedisService("redis", paths.data_dir() / "redis")
_llama = LlamaService("llama.cpp server", paths.data_dir() / "llama")
_held: set[str] = set()
_postgres_server: object | None = None


def ensure_postgres() -> None:
    """Take a handle on the embedded PostgreSQL (pgserver counts handles itself) and create our database."""
    global _postgres_server
    if os.environ.get("DATABASE_URL") or _postgres_server is not None:
        return
    _postgres_server = postgres.take_handle()


def ensure_redis() -> None:
    if os.environ.get("REDIS_URL") or "redis" in _held:
        return
    _redis.acquire()
    _held.add("redis")


def ensure_llama() -> None:
    if os.environ.get("LLAMA_POOL") or "llama" in _held:
        return
    _llama.acquire()
    _held.add("llama")


def ensure_core_services() -> None:
    """PostgreSQL and Redis: what every command and process of the project needs."""
    ensure_postgres()
    ensure_redis()


def release_all() -> None:
    """Let go of every handle this process holds (the last holder stops the service)."""
    for name, service in (("llama", _llama), ("redis", _redis)):
        if name in _held:
            service.release()
            _held.discard(name)
    global _postgres_server
    if _postgres_server is not None:
        postgres.let_go(_postgres_server)
        _postgres_server = None


def supervised() -> list[Supervised]:
    """The embedded servers this process holds, for the dev runner's supervisor to start again if they die."""
    held: list[Supervised] = [
        service for name, service in (("redis", _redis), ("llama", _llama)) if name in _held
    ]
    if _postgres_server is not None:
        held.append(postgres.PostgresWatch(_postgres_server))
    return held
