"""Webhook intake: signed WhatsApp deliveries per second, with p50/p99 acknowledgement latency.

    .venv/bin/python bench/webhook_intake.py [--requests 6000] [--concurrency 32] [--workers 1]

Starts the real ASGI server (uvicorn, ``config.asgi``, DEBUG off) on a scratch database, then a load client
on raw asyncio keep-alive connections (lighter than an HTTP library, so that the 2 cores go to the server)
POSTs distinct signed WhatsApp text deliveries (about 700 bytes each, like Meta's) at the given concurrency.
Every answer must be 200; afterwards the stored WebhookDelivery rows are counted: the view commits the row
before it answers, so rows == requests. Processing (the Celery task) is not part of this figure: its queue
is left unconsumed and flushed at the end. Prints one JSON line and writes bench/results/webhook_intake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

RESULTS = ROOT / "bench" / "results" / "webhook_intake.json"
DB_NAME = "bench_webhook_intake"
REDIS_DB = os.environ.get("BENCH_REDIS_DB", "15")
SECRET = "bench-app-secret-" + secrets.token_hex(8)
BUDGET = 500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivery(n: int) -> bytes:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                            "messages": [
                                {
                                    "from": "16505551234",
                                    "id": f"wamid.bench.{n:08d}.{secrets.token_hex(12)}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": "Does it come in another color? Café ☕"},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(payload).encode()


def request_bytes(body: bytes, port: int) -> bytes:
    from messaging.meta.signature import sign

    head = (
        "POST /webhooks/whatsapp HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Hub-Signature-256: {sign(body, SECRET)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def load(
    port: int, requests: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("uvicorn did not become ready")


def cpu_seconds(root: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers), from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    os.environ["BIZAGENT_REDIS_DB"] = REDIS_DB
    setup_django()
    import redis
    from django.conf import settings

    with scratch_database(DB_NAME):
        port = free_port()
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            # Production requires its own key; this process's, so both read the same stored secrets.
            "FIELD_ENCRYPTION_KEY": settings.FIELD_ENCRYPTION_KEY,
            # Plain HTTP on loopback, without a TLS proxy in front.
            "SECURE_SSL_REDIRECT": "0",
            "BIZAGENT_DB_NAME": DB_NAME,
            "BIZAGENT_REDIS_DB": REDIS_DB,
            "META_APP_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_ready(port, server)
            warm = [request_bytes(delivery(-i - 1), port) for i in range(args.warmup)]
            asyncio.run(load(port, warm, args.concurrency))
            requests = [request_bytes(delivery(i), port) for i in range(args.requests)]
            cpu_before = cpu_seconds(server.pid)
            elapsed, latencies, statuses = asyncio.run(load(port, requests, args.concurrency))
            server_cpu = cpu_seconds(server.pid) - cpu_before
            # The same client and server on a view that does nothing (sync GET /healthz): the ceiling this
            # machine gives Django + uvicorn right now, to read the figure above against.
            ping = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            ping_elapsed, ping_latencies, _ = asyncio.run(
                load(port, [ping] * args.requests, args.concurrency)
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        from messaging.models import WebhookDelivery

        stored = WebhookDelivery.objects.count() - args.warmup
    redis.Redis.from_url(settings.REDIS_URL).flushdb()

    result = {
        "bench": "webhook_intake",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "uvicorn_workers": args.workers,
        "body_bytes": len(delivery(0)),
        "per_second": round(args.requests / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.mean(latencies) * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "stored": stored,
        # CPU the ASGI server spent per delivery (PostgreSQL and the client not included): the figure that
        # noisy neighbours disturb least.
        "server_cpu_ms_per_delivery": round(server_cpu / args.requests * 1000, 3),
        "healthz_per_second": round(args.requests / ping_elapsed, 1),
        "healthz_p50_ms": round(percentile(ping_latencies, 0.50) * 1000, 2),
        "load_average": round(os.getloadavg()[0], 2),
        "budget_per_second": BUDGET,
        "within_budget": args.requests / elapsed >= BUDGET and stored == args.requests,
    }
    line = json.dumps(result)
    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    return 0 if statuses == {200: args.requests} and stored == args.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
