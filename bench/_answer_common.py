"""Shared by bench/answer_eval.py and bench/answer_load.py: the whole stack on the real model, shops imported
from files, and a widget visitor that asks a question over the chat websocket.

What runs (the processes of ``./dev start``, devstack/runner.py): the embedded PostgreSQL and Redis (shared by
every process of the project through ``devstack.services``' handles), the embedded llama.cpp server with
SmolLM2-135M-Instruct unless ``LLAMA_POOL`` names real servers, one Celery reply worker per core
(``-Q replies -P threads -c 32``), one ``-Q ingest,outbound -P prefork -c 2`` worker, and uvicorn. Their
settings are the stack's defaults (DEBUG, burst waits, timeouts, rate limits), so the figures are what a
``./dev start`` user gets; only the database and the Redis database differ.

Isolation from a developer's data: a database of its own (``bizagent_answer_eval`` by default, created
fresh and dropped afterwards unless ``--keep-db``) on the same embedded PostgreSQL, and Redis database 12
(``BIZAGENT_REDIS_DB`` overrides), flushed at start. ``BIZAGENT_DATA_DIR`` and ``DATABASE_URL`` /
``REDIS_URL`` / ``LLAMA_POOL`` are honoured as everywhere in the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data"
ORIGIN = "https://shop.example"
REDIS_DB = "12"


def default_shops(data: Path) -> list[str]:
    """The answer-eval shops as ``--shop`` values: the bike catalog with its FAQ, and the hardware catalog."""
    return [
        f"bike={data / 'retrieval-eval' / 'bike.csv'},{data / 'answer-eval' / 'bike-faq.md'}",
        f"hardware={data / 'retrieval-eval' / 'hardware.csv'}",
    ]


def parse_shop(value: str) -> tuple[str, list[Path]]:
    """``KEY=FILE[,FILE...]``: a business keyed KEY (the questions' ``shop``) importing each file in order."""
    key, sep, files = value.partition("=")
    paths = [Path(p).expanduser() for p in files.split(",") if p.strip()]
    if not sep or not key.strip() or not paths:
        raise SystemExit(f"--shop {value!r}: expected KEY=FILE[,FILE...]")
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--shop {value!r}: {path} is not a file")
    return key.strip(), paths


def machine() -> dict[str, Any]:
    """Where and on what the figures were taken."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if not commit:  # not a git checkout (e.g. a `git archive` export): the caller may say what it is
        commit, dirty = os.environ.get("BENCH_COMMIT", "unknown"), ""
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": commit + (" (+ uncommitted changes)" if dirty else ""),
        "cpu": f"{os.cpu_count()} x {cpu or platform.machine()}",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "llama_pool": os.environ.get("LLAMA_POOL") or "embedded llama.cpp (SmolLM2-135M-Instruct Q4_1)",
    }


# --- The stack -------------------------------------------------------------------------------------------


def setup_django() -> None:
    """Embedded PostgreSQL and Redis (handles), the llama.cpp server when LLAMA_POOL is unset, Django."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # The stack's development defaults, as `./dev start` runs them (settings default to production).
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("BIZAGENT_REDIS_DB", REDIS_DB)
    from devstack import paths, services

    if not os.environ.get("DATABASE_URL"):
        services.ensure_postgres()
    if not os.environ.get("REDIS_URL"):
        services.ensure_redis()
    if not os.environ.get("LLAMA_POOL"):
        say("starting the embedded llama.cpp server (SmolLM2-135M-Instruct), or joining the running one")
        services.ensure_llama()
        say(f"llama.cpp server at {paths.embedded_llama_url()}")
    import django

    django.setup()


def say(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


class Stack:
    """Reply workers, the ingest/outbound worker and uvicorn, as subprocesses on database ``db_name``."""

    def __init__(self, *, db_name: str, logs: Path) -> None:
        self.db_name = db_name
        self.logs = logs
        self.processes: list[Any] = []
        self.asgi: Any = None

    def environment(self) -> dict[str, str]:
        from django.conf import settings

        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "BIZAGENT_DB_NAME": self.db_name,
                "REDIS_URL": settings.REDIS_URL,
                "PYTHONUNBUFFERED": "1",
            }
        )
        from tests.fixtures.stack import LOAD_TEST_CHAT_LIMITS

        for name, value in LOAD_TEST_CHAT_LIMITS.items():
            env.setdefault(name, value)
        return env

    def start(self) -> None:
        import redis
        from django.conf import settings

        from tests.fixtures.stack import declare_queues, start_asgi, start_worker

        self.logs.mkdir(parents=True, exist_ok=True)
        # Our own Redis database: a previous run's leftover tasks and resume logs must not leak in. A flush
        # drops kombu's queue bindings, so declare them again before anyone publishes.
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
        declare_queues()
        env = self.environment()
        reply_processes = max(1, int(os.environ.get("REPLY_WORKER_PROCESSES", str(os.cpu_count() or 1))))
        reply_threads = int(os.environ.get("REPLY_WORKER_THREADS", "32"))
        say(
            f"starting {reply_processes} reply worker(s) (threads x{reply_threads}), the ingest worker, uvicorn"
        )
        for number in range(reply_processes):
            self.processes.append(
                start_worker(
                    env,
                    self.logs / f"replies{number}.log",
                    concurrency=reply_threads,
                    pool="threads",
                    queues="replies",
                    name=f"replies{number}",
                )
            )
        self.processes.append(
            start_worker(
                env,
                self.logs / "worker.log",
                concurrency=int(os.environ.get("WORKER_CONCURRENCY", "2")),
                pool="prefork",
                queues="ingest,outbound",
                name="worker",
            )
        )
        self.asgi = start_asgi(env, self.logs / "asgi.log")
        self.processes.append(self.asgi)
        self._check_ready()

    def _check_ready(self) -> None:
        import httpx

        try:
            response = httpx.get(f"{self.asgi.url}/readyz", timeout=30)
            if response.status_code != 200:
                say(f"/readyz says not ready ({response.status_code}): {response.text[:600]}")
        except httpx.HTTPError as exc:
            say(f"/readyz did not answer: {exc}")

    def chat_url(self, business: Any) -> str:
        return f"{self.asgi.ws_url}/ws/chat/{business.widget_key}/"

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes = []


@contextlib.contextmanager
def running_stack(*, db_name: str, keep_db: bool, logs: Path) -> Iterator[Stack]:
    """A fresh, migrated database ``db_name`` and the stack's processes on it; both go at the end."""
    from _scratch import scratch_database

    # ``timeout`` and Ctrl-C alike stop the workers and uvicorn (a leftover worker would take later tasks).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    say(f"creating and migrating the database {db_name!r}")
    with scratch_database(db_name, keep=keep_db):
        stack = Stack(db_name=db_name, logs=logs)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
    if keep_db:
        say(f"kept the database {db_name!r}")


def business_with_files(*, key: str, paths: list[Path]) -> tuple[Any, list[str]]:
    """A business allowed on ``ORIGIN``, with each file imported through the import service (the one
    ``manage.py import_catalog`` runs, embeddings included). Returns it and each import's summary line."""
    from businesses.services import business_create
    from catalogs.services.imports import import_file

    business = business_create(name=f"{key.replace('-', ' ').title()} Shop", allowed_origins=[ORIGIN])
    lines = []
    for path in paths:
        imp = import_file(business=business, path=path, mode="upsert")
        if imp.state != "succeeded":
            raise SystemExit(f"{path}: import failed: {imp.error_message}")
        lines.append(
            f"{key}: {path.name}: {imp.created_count} created, {imp.failed_count} row errors, "
            f"{imp.embedded_count} embedded"
        )
    return business, lines


# --- A widget visitor ------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the customer saw for one message: how it ended and when."""

    question: str
    # done / cut / failed (from message.done), or: timeout, error, skipped (a person has it), closed
    status: str = ""
    text: str = ""
    cards: list[dict[str, Any]] = field(default_factory=list)
    grounding: dict[str, Any] | None = None
    first_delta_s: float | None = None  # message sent -> first delta (the customer's wait)
    done_s: float | None = None  # message sent -> message.done
    error: str = ""
    handoff: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    message_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def read_stored(self) -> Reply:
        """The grounding result and timings from the stored reply (the customer's socket gets neither)."""
        from messaging.models import Message

        if self.message_id is not None:
            stored = Message.objects.filter(pk=self.message_id).values("grounding", "timings").first()
            if stored is not None:
                self.grounding, self.timings = stored["grounding"], stored["timings"] or {}
        return self


class Visitor:
    """A fresh widget visitor (no token) on its own socket; its first message opens a new conversation."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None

    async def __aenter__(self) -> Visitor:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, origin=ORIGIN, max_size=2**22, open_timeout=30)  # type: ignore[arg-type]
        await self.ws.send(json.dumps({"type": "hello", "visitor_token": None, "conversation_id": None}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if frame["type"] == "ready":
                return self
            if frame["type"] == "error":
                raise RuntimeError(f"hello refused: {frame}")

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def ask(self, text: str, *, timeout: float) -> Reply:
        """Send ``text`` and read until its reply's ``message.done`` (or an error, or ``timeout`` seconds)."""
        reply = Reply(question=text)
        client_id = uuid.uuid4().hex
        sent = time.perf_counter()
        await self.ws.send(json.dumps({"type": "message", "client_id": client_id, "text": text}))
        mine: int | None = None  # our customer message's id
        reply_id: int | None = None
        while True:
            left = timeout - (time.perf_counter() - sent)
            if left <= 0:
                reply.status = "timeout"
                return reply
            try:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                reply.status = "timeout"
                return reply
            except Exception as exc:  # the socket closed under us
                reply.status, reply.error = "closed", f"{type(exc).__name__}: {exc}"
                return reply
            now = time.perf_counter() - sent
            kind = frame.get("type")
            if kind == "message.created":
                message = frame["message"]
                if message.get("role") == "customer" and message.get("client_id") == client_id:
                    mine = message["id"]
                    if message.get("status") == "skipped":  # a person has the conversation: no reply comes
                        reply.status = "skipped"
                        reply.done_s = now
                        return reply
                elif message.get("role") == "agent" and mine is not None and reply_id is None:
                    reply_id = message["id"]
            elif kind == "delta" and (reply_id is None or frame.get("message_id") == reply_id):
                if reply.first_delta_s is None:
                    reply.first_delta_s = now
            elif kind == "message.done" and mine is not None:
                if reply_id is not None and frame.get("message_id") != reply_id:
                    continue
                reply.status = frame.get("status", "")
                reply.text = frame.get("text") or ""
                reply.cards = frame.get("cards") or []
                reply.message_id = frame.get("message_id")
                reply.done_s = now
                return reply
            elif kind == "handoff":
                reply.handoff = f"{frame.get('state')}: {frame.get('reason')}"
            elif kind == "error" and frame.get("client_id") in (client_id, None):
                reply.status, reply.error = "error", f"{frame.get('code')}: {frame.get('detail')}"
                reply.done_s = now
                return reply


async def ask_fresh(url: str, text: str, *, timeout: float) -> Reply:
    """A new visitor and conversation, one question."""
    async with Visitor(url) as visitor:
        return await visitor.ask(text, timeout=timeout)


# --- Output ----------------------------------------------------------------------------------------------


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def median(values: list[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
