"""Outbound webhooks: events per second delivered by the dispatcher to a local receiver.

    .venv/bin/python bench/webhook_dispatch.py [--events 2000] [--per-conversation 5] [--concurrency 2]

On a scratch database: one business with an endpoint on a loopback receiver (a separate process: raw
asyncio keep-alive HTTP that answers 200 at once), and a real Celery worker on the ``outbound`` queue
(prefork, ``--concurrency`` processes). The clock starts when the events are emitted (``outbox.emit``, in
batches of 100 per transaction, ``--per-conversation`` events per conversation so that the order per
conversation holds each line back) and stops when every delivery has succeeded. The path is the production
one: fan-out task, one deliver task per delivery, signed POST, attempt logged, next in line queued. Prints one
JSON line and writes bench/results/webhook_dispatch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

RESULTS = ROOT / "bench" / "results" / "webhook_dispatch.json"
DB_NAME = os.environ.get("BENCH_DB_NAME", "bench_webhook_dispatch")
REDIS_DB = os.environ.get("BENCH_REDIS_DB", "15")
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def serve(port_file: Path) -> None:
    """The receiver: reads each request (headers + Content-Length body) and answers 200, keep-alive."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--per-conversation", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0

    os.environ["BIZAGENT_REDIS_DB"] = REDIS_DB
    setup_django()
    from django.conf import settings
    from django.db import transaction

    from businesses.models import Business
    from outbox.emit import conversation_key, event_emit
    from outbox.models import EventType
    from tests.fixtures.stack import stack_environment, start_worker
    from webhooks.models import EndpointDelivery
    from webhooks.services import endpoint_create

    logs = Path(tempfile.mkdtemp(prefix="bench-webhook-dispatch-"))
    port_file = logs / "port"
    receiver = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    worker = None
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        with scratch_database(DB_NAME):
            env = stack_environment(db_name=DB_NAME, inference_url="http://127.0.0.1:9")
            env.update({"BIZAGENT_REDIS_DB": REDIS_DB, "OUTBOUND_WEBHOOK_SWEEP_SECONDS": "3600"})
            worker = start_worker(
                env, logs / "worker.log", concurrency=args.concurrency, queues="outbound", name="bench-hooks"
            )
            business = Business.objects.create(name="Bench", slug="bench-hooks")
            endpoint = endpoint_create(
                business=business,
                url=f"http://127.0.0.1:{port_file.read_text()}/hooks",
                events=[EventType.MESSAGE_CREATED],
            )
            started = time.monotonic()
            for first in range(0, args.events, 100):
                with transaction.atomic():
                    for n in range(first, min(first + 100, args.events)):
                        conversation = n // args.per_conversation
                        event_emit(
                            business_id=business.pk,
                            type=EventType.MESSAGE_CREATED,
                            data={
                                "conversation_id": conversation,
                                "message_id": n,
                                "channel": "widget",
                                "role": "customer",
                                "text": f"Do you have the trail boot in size {n % 12 + 36}?",
                                "status": "received",
                                "created_at": "2026-12-06T00:00:00Z",
                            },
                            ordering_key=conversation_key(conversation),
                        )
            emitted = time.monotonic() - started
            succeeded = 0
            deadline = started + 600
            while succeeded < args.events and time.monotonic() < deadline:
                time.sleep(0.2)
                succeeded = EndpointDelivery.objects.filter(
                    endpoint=endpoint, state=EndpointDelivery.State.SUCCEEDED
                ).count()
            elapsed = time.monotonic() - started
            others = EndpointDelivery.objects.exclude(state=EndpointDelivery.State.SUCCEEDED).count()
    finally:
        if worker is not None:
            worker.stop()
        receiver.terminate()
        receiver.wait()
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    result = {
        "bench": "webhook_dispatch",
        "events": args.events,
        "per_conversation": args.per_conversation,
        "worker_concurrency": args.concurrency,
        "succeeded": succeeded,
        "not_succeeded": others,
        "emit_seconds": round(emitted, 2),
        "seconds": round(elapsed, 2),
        "events_per_second": round(succeeded / elapsed, 1),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if succeeded == args.events else 1


if __name__ == "__main__":
    sys.exit(main())
