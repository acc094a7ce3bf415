"""Framework overhead on time to first token, at a websocket client, at 1, 10 and 50 concurrent conversations.

    .venv/bin/python bench/ttft_overhead.py [--concurrency 1 10 50] [--rounds 5] [--server-delay 0.02]

What it starts (the same way as tests/fixtures/stack.py): the embedded Postgres and Redis, a database
``bizagent_bench`` (created and migrated once), a business with a small embedded catalog, the test
inference server in a process of its own (first token after ``--server-delay`` seconds, then a token every
10 ms),
a real Celery worker (``-Q replies,ingest,outbound``; ``--pool``, default threads -c 64: a reply is I/O
bound and holds its worker slot for its whole stream) and a real uvicorn. Each conversation is one
websocket client that sends a message, reads the whole reply, and sends the next one (``--rounds``).

Overhead = client: message sent -> first ``delta`` received. The question is one the catalog answers
("how much is the Product 1 stove?"): the first text a customer sees is the answer composed from the rows,
streamed before any model call (docs/agent.md), so no model delay is inside it; the model's sentences follow
(the pool figure below times its first token).
Breakdown (p50, ms), from the frames: websocket->db (``stored_ms`` of message.created, consumer side),
queue wait, claim, retrieval, prompt, pool (first token from the pool client's request, minus the server's
delay), channel layer->socket (first delta's ``sent_at`` at the worker to its arrival at the client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = "bizagent_bench"
RESULTS = ROOT / "bench" / "results" / "ttft_overhead.json"
# Answered from the catalog: a question the agent cannot answer gets the fallback, then a handoff to a person,
# and the rounds after it no reply at all.
QUESTION = "how much is the Product 1 stove?"
CORES = os.cpu_count() or 1
ORIGIN = "https://shop.example"
CATALOG = "id,title,description,availability,price,link,image_link,brand,product_type\n" + "".join(
    f"SKU-{i},Product {i} {kind},A {kind} for the outdoors; model {i}.,in stock,{10 + i}.50 EUR,"
    f"https://shop.example/p/{i},https://shop.example/i/{i}.jpg,Brand{i % 7},{kind}\n"
    for i, kind in enumerate(["tent", "stove", "sleeping bag", "lamp", "backpack", "mug", "chair"] * 30)
)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")  # this process; the measured stack runs with DEBUG off (below)
    os.environ["BIZAGENT_DB_NAME"] = BENCH_DB
    os.environ.setdefault("BIZAGENT_REDIS_DB", "14")
    from devstack import paths, services

    services.ensure_core_services()
    import psycopg

    with psycopg.connect(
        host=str(paths.postgres_socket_dir()), user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_business() -> Any:
    import tempfile

    from businesses.services import business_create
    from catalogs.services.imports import import_file

    business = business_create(name=f"Bench {uuid.uuid4().hex[:6]}", allowed_origins=[ORIGIN])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.csv"
        path.write_text(CATALOG)
        import_file(business=business, path=path, mode="upsert", embed=True)
    return business


class Stack:
    """The test inference server (its own process), then a real worker and uvicorn pointed at it.

    Embeddings are the embedded default (all-MiniLM-L6-v2 in the worker, a few ms a query): the test
    server's vectors are random per text, so no row would be relevant enough to answer from, and every
    reply would be the fallback."""

    def __init__(
        self,
        *,
        reply: str,
        token_delay: float,
        server_delay: float,
        pool: str,
        reply_workers: int,
        asgi_workers: int = 1,
    ) -> None:
        import subprocess

        import httpx
        from django.conf import settings

        # Its own process: in this one it would share the GIL with the websocket clients that take the times.
        self.inference = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.inference_server",
                "--reply",
                reply,
                "--token-delay",
                str(token_delay),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.inference.stdout is not None
        self.inference_url = self.inference.stdout.readline().split()[-1]
        if server_delay:
            httpx.post(
                f"{self.inference_url}/_control",
                json={"fault": {"kind": "slow_first_token", "delay": server_delay}},
            ).raise_for_status()
        settings.LLAMA_POOL = self.inference_url
        settings.LLAMA_MODEL = "test-model"
        self.pool = pool
        self.reply_workers = reply_workers
        self.asgi_workers = asgi_workers
        self.workers: list[Any] = []
        self.asgi: Any = None

    def start(self) -> None:
        from django.conf import settings

        from tests.fixtures.stack import LOAD_TEST_CHAT_LIMITS, stack_environment, start_asgi, start_worker

        logs = ROOT / ".data" / "bench"
        logs.mkdir(parents=True, exist_ok=True)
        env = stack_environment(
            db_name=settings.DATABASES["default"]["NAME"],
            inference_url=self.inference_url,
            overrides={
                **LOAD_TEST_CHAT_LIMITS,
                "CHAT_VISITOR_MESSAGES_PER_MINUTE": "100000",
                "CHAT_BUSINESS_MESSAGES_PER_MINUTE": "100000",
                "LLAMA_BUSINESS_MAX_CONCURRENCY": "1000",
                "LOG_LEVEL": "WARNING",
                # As in production: with DEBUG on, Django keeps and formats every query it runs.
                "DEBUG": "0",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                # Production requires its own key; this process's, so both read the same stored secrets.
                "FIELD_ENCRYPTION_KEY": settings.FIELD_ENCRYPTION_KEY,
                # Plain HTTP on loopback, without a TLS proxy in front.
                "SECURE_SSL_REDIRECT": "0",
            },
        )
        kind, size = self.pool.split()
        self.workers = [start_worker(env, logs / "worker.log", concurrency=int(size), pool=kind)]
        for number in range(1, self.reply_workers):
            # More processes for replies alone, as the dev runner (devstack.runner) runs them (REPLY_WORKER_PROCESSES).
            self.workers.append(
                start_worker(
                    env,
                    logs / f"worker{number}.log",
                    concurrency=int(size),
                    pool=kind,
                    queues="replies",
                    name=f"replies{number}",
                )
            )
        self.asgi = start_asgi(env, logs / "asgi.log", workers=self.asgi_workers)

    def stop(self) -> None:
        for process in (*self.workers, self.asgi):
            if process is not None:
                process.stop()
        self.inference.terminate()
        self.inference.wait(10)


async def conversation(
    url: str, rounds: int, results: list[dict[str, Any]], question: str, think: float
) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, origin=ORIGIN, max_size=2**22) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello"}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        for r in range(rounds):
            if think:
                # The customer reads the answer and types the next message (uniform, mean ``think`` s).
                await asyncio.sleep(random.uniform(0.5, 1.5) * think)
            sent = time.time()
            await ws.send(json.dumps({"type": "message", "client_id": uuid.uuid4().hex, "text": question}))
            row: dict[str, Any] = {}
            while True:
                frame = json.loads(await ws.recv())
                now = time.time()
                if frame["type"] == "message.created" and frame["message"]["role"] == "customer":
                    row["stored_ms"] = frame["message"].get("stored_ms", 0.0)
                elif frame["type"] == "delta" and "ttft" not in row:
                    row["ttft"] = (now - sent) * 1000
                    row["layer_to_socket"] = (now - frame.get("sent_at", now)) * 1000
                    row["deltas"] = 1
                    row["chars"] = len(frame["text"])
                elif frame["type"] == "delta":
                    row["deltas"] += 1
                    row["chars"] += len(frame["text"])
                elif frame["type"] == "message.done":
                    row["total"] = (now - sent) * 1000
                    row["message_id"] = frame["message_id"]  # its timings are read from the stored reply
                    row["status"] = frame["status"]
                    break
                elif frame["type"] == "error":
                    raise RuntimeError(frame)
            if r > 0 or rounds == 1:  # the first round of each conversation warms connections
                results.append(row)


class CpuMeter:
    """CPU seconds spent by each part of the run (what a level costs, per reply): on a 2-core machine the
    queueing that makes latency is decided by how busy the cores are."""

    def __init__(self, stack: Stack) -> None:
        import psutil

        from devstack import paths

        data = str(paths.data_dir())
        self.parts: dict[str, list[Any]] = {
            "asgi": [psutil.Process(stack.asgi.proc.pid)],
            "workers": [psutil.Process(w.proc.pid) for w in stack.workers],
            "inference_server": [psutil.Process(stack.inference.pid)],
            "bench_client": [psutil.Process()],
            "postgres": [],
            "redis": [],
        }
        for process in psutil.process_iter(["name", "cmdline"]):
            line = " ".join(process.info["cmdline"] or [])
            if "redis-server" in (process.info["name"] or "") and data in line:
                self.parts["redis"].append(process)
            elif (process.info["name"] or "").startswith("postgres") and data in line:
                self.parts["postgres"].append(process)
        self.before = self.read()

    def read(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for part, processes in self.parts.items():
            total = 0.0
            for process in processes:
                try:
                    # The client's children are the stack's processes, counted in their own parts.
                    family = (
                        [process] if part == "bench_client" else [process, *process.children(recursive=True)]
                    )
                except Exception:
                    continue
                for member in family:
                    try:
                        times = member.cpu_times()
                    except Exception:
                        continue
                    total += times.user + times.system
            totals[part] = total
        return totals

    def used(self) -> dict[str, float]:
        """CPU seconds of each part since the meter started, and ``all``."""
        after = self.read()
        used = {part: after[part] - self.before.get(part, 0.0) for part in after}
        return {**used, "all": sum(used.values())}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def with_stored_timings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each reply's timings from its stored message (the customer's socket does not get them)."""
    from messaging.models import Message

    stored = dict(
        Message.objects.filter(pk__in=[r["message_id"] for r in results]).values_list("pk", "timings")
    )
    return [{**r, "timings": stored.get(r["message_id"]) or {}} for r in results]


async def run_level(
    url: str, concurrency: int, rounds: int, question: str, think: float = 0.0
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    await asyncio.gather(*(conversation(url, rounds, results, question, think) for _ in range(concurrency)))
    return results


def report(
    concurrency: int,
    results: list[dict[str, Any]],
    server_delay_ms: float,
    seconds: float,
    cpu: dict[str, float] | None = None,
    replies_run: int = 0,
) -> dict[str, Any]:
    overhead = [r["ttft"] for r in results]
    t = [r["timings"] for r in results]

    def p50(values: list[float]) -> float:
        return round(statistics.median(values), 1) if values else float("nan")

    row = {
        "concurrency": concurrency,
        "replies": len(results),
        "overhead_p50_ms": round(pct(overhead, 50), 1),
        "overhead_p95_ms": round(pct(overhead, 95), 1),
        "ws_to_db_p50": p50([r["stored_ms"] for r in results]),
        "queue_wait_p50": p50([x.get("queue_wait", 0.0) for x in t]),
        "lock_p50": p50([x.get("lock", 0.0) for x in t]),
        "claim_p50": p50([x.get("claim", 0.0) for x in t]),
        "stream_setup_p50": p50([x.get("stream_setup", 0.0) for x in t]),
        "retrieval_p50": p50([x.get("retrieval", 0.0) for x in t]),
        "prompt_p50": p50([x.get("prompt", 0.0) for x in t]),
        # Replies that called the model (the stand-in's delay taken off); NaN when the answer needed none.
        "pool_p50": p50([x["pool_first_token"] - server_delay_ms for x in t if "pool_first_token" in x]),
        "layer_to_socket_p50": p50([r["layer_to_socket"] for r in results]),
        "group_sends_per_reply_p50": p50([x.get("group_sends", 0) for x in t]),
        "replies_per_s": round(len(results) / seconds, 1),
        # CPU time of each part of the run per reply (counting each conversation's warm-up round too),
        # and how busy that kept the machine's cores.
        "cpu_ms_per_reply": {k: round(v * 1000 / max(1, replies_run), 1) for k, v in (cpu or {}).items()},
        "cpu_busy_pct": round(100 * (cpu or {}).get("all", 0.0) / seconds / CORES, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-delay", type=float, default=0.02)
    parser.add_argument(
        "--think",
        type=float,
        default=2.0,
        help="customer's mean pause (s) between an answer and the next message; 0 = none (saturation)",
    )
    parser.add_argument("--pool", default="threads 64", help='"threads 64" or "prefork 2"')
    parser.add_argument("--reply-workers", type=int, default=2, help="worker processes for replies")
    parser.add_argument("--asgi-workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    # ``timeout`` and Ctrl-C alike stop the worker and uvicorn (a leftover worker would take the next run's tasks).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    setup_django()
    stack = Stack(
        reply="The Product 1 stove costs 11.50 EUR and is in stock; it folds flat and boils water fast.",
        token_delay=0.01,
        server_delay=args.server_delay,
        pool=args.pool,
        reply_workers=args.reply_workers,
        asgi_workers=args.asgi_workers,
    )
    rows = []
    try:
        business = make_business()
        stack.start()
        url = f"{stack.asgi.ws_url}/ws/chat/{business.widget_key}/"
        asyncio.run(run_level(url, 2, 2, "do you have the Product 1 stove?"))  # warm up: connections, caches
        for level in args.concurrency:
            meter = CpuMeter(stack)
            started = time.perf_counter()
            results = with_stored_timings(
                asyncio.run(run_level(url, level, args.rounds, QUESTION, args.think))
            )
            seconds = time.perf_counter() - started
            row = report(
                level,
                results,
                args.server_delay * 1000,
                seconds,
                meter.used(),
                replies_run=len(results) + (level if args.rounds > 1 else 0),
            )
            rows.append(
                {
                    **row,
                    "think_s": args.think,
                    "pool": args.pool,
                    "reply_workers": args.reply_workers,
                    "asgi_workers": args.asgi_workers,
                }
            )
    finally:
        stack.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
