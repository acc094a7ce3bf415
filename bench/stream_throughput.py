"""Streamed tokens per second delivered end to end with 50 conversations streaming at once, and Redis
messages per reply.

    .venv/bin/python bench/stream_throughput.py [--conversations 50] [--tokens 200] [--token-delay 0.005]

Starts the stack as bench/ttft_overhead.py does (the test inference server in its own process, real Celery
workers and uvicorn, the ``bizagent_bench`` database). Writes bench/results/stream_throughput.json. Every conversation asks once; the server streams ``--tokens``
tokens per reply. Reported: tokens delivered to the clients per second (total tokens / wall time from the
first send to the last ``message.done``), the per-conversation rate, ``delta`` frames per reply, and the
channel-layer group sends per reply (``timings.group_sends``: message.created + deltas + done) as the
Redis messages per reply (each group send is one PUBLISH on the pub/sub layer; each delta also one
RPUSH+EXPIRE pipeline to the resume log). A client checks that its deltas joined equal the final text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
import uuid
from typing import Any

from ttft_overhead import ORIGIN, ROOT, Stack, make_business, setup_django

RESULTS = ROOT / "bench" / "results" / "stream_throughput.json"


async def one(url: str, expected: str, rows: list[dict[str, Any]]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, origin=ORIGIN, max_size=2**22) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello"}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        sent = time.time()
        await ws.send(
            json.dumps({"type": "message", "client_id": uuid.uuid4().hex, "text": "tell me about it"})
        )
        parts: list[str] = []
        first = None
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "delta":
                first = first or time.time()
                parts.append(frame["text"])
            elif frame["type"] == "message.done":
                done = time.time()
                rows.append(
                    {
                        "deltas": len(parts),
                        "intact": "".join(parts).strip() == expected.strip(),
                        "stream_s": done - (first or done),
                        "total_s": done - sent,
                        "group_sends": frame.get("timings", {}).get("group_sends", 0),
                        "end": done,
                        "start": sent,
                    }
                )
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--token-delay", type=float, default=0.005)
    parser.add_argument("--pool", default="threads 64")
    parser.add_argument("--reply-workers", type=int, default=2, help="worker processes for replies")
    args = parser.parse_args()
    reply = " ".join(f"w{i}" for i in range(args.tokens))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    setup_django()
    stack = Stack(
        reply=reply,
        token_delay=args.token_delay,
        server_delay=0.0,
        pool=args.pool,
        reply_workers=args.reply_workers,
    )
    try:
        business = make_business()
        stack.start()
        url = f"{stack.asgi.ws_url}/ws/chat/{business.widget_key}/"

        async def run(n: int) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            await asyncio.gather(*(one(url, reply, rows) for _ in range(n)))
            return rows

        asyncio.run(run(2))  # warm up
        rows = asyncio.run(run(args.conversations))
        wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        tokens = args.tokens * len(rows)
        line = json.dumps(
            {
                "conversations": len(rows),
                "tokens_per_reply": args.tokens,
                "server_token_delay_ms": args.token_delay * 1000,
                "tokens_per_s_total": round(tokens / wall, 1),
                "tokens_per_s_per_conversation_p50": round(
                    statistics.median(args.tokens / max(r["stream_s"], 1e-6) for r in rows), 1
                ),
                "delta_frames_per_reply_p50": statistics.median(r["deltas"] for r in rows),
                "group_sends_per_reply_p50": statistics.median(r["group_sends"] for r in rows),
                "all_intact": all(r["intact"] for r in rows),
                "wall_s": round(wall, 2),
                "reply_workers": args.reply_workers,
            }
        )
        print(line, flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(line + "\n")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
