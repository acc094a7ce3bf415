"""Overhead of the pool client over a raw httpx stream, against the same test server (a subprocess).

For 1, 16 and 64 concurrent streams: time to first token and time per token, p50/p95, for a raw
``httpx.AsyncClient`` stream that parses each ``data:`` line with ``json.loads`` and for
``inference.chat.stream_chat`` (routing through Redis, leases, circuit, SSE parser, metrics).
Run: ``.venv/bin/python bench/pool_overhead.py [--rounds 5] [--tokens 32]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import TYPE_CHECKING

from _pool_common import pct, setup_django, start_server, write

if TYPE_CHECKING:
    import httpx

    from inference.types import ChatRequest


async def raw_stream(http: httpx.AsyncClient, url: str, body: dict[str, object]) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    tokens = 0
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or ():
                if choice["delta"].get("content"):
                    tokens += 1
                    if first is None:
                        first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return (first - started) * 1000, (end - first) * 1000 / max(1, tokens - 1), tokens


async def pool_stream(request: ChatRequest) -> tuple[float, float, int]:
    from inference.chat import stream_chat
    from inference.types import StreamEnd, TextDelta

    started = time.perf_counter()
    first = None
    tokens = 0
    end = None
    async with contextlib.aclosing(stream_chat(request)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
            elif isinstance(event, StreamEnd):
                end = time.perf_counter()
    assert first is not None and end is not None
    return (first - started) * 1000, (end - first) * 1000 / max(1, tokens - 1), tokens


async def measure(
    url: str, concurrency: int, rounds: int, tokens: int, min_streams: int
) -> dict[str, object]:
    import httpx

    from inference.transport import close_clients
    from inference.types import ChatRequest

    messages = [{"role": "user", "content": "hello"}]
    body = {
        "model": "test-model",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
        "temperature": 0.3,
        "top_p": 0.9,
    }
    out: dict[str, object] = {"concurrency": concurrency}
    # The same limits as the pool's client: keep-alive for every stream, so that neither side reconnects.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as http:
        results: dict[str, list[tuple[float, float, int]]] = {"raw": [], "pool": []}
        # Warm both (connections, caches), then alternate rounds so that noise hits both alike.
        await asyncio.gather(*(raw_stream(http, url, body) for _ in range(concurrency)))
        await asyncio.gather(
            *(pool_stream(ChatRequest(business_id=0, messages=messages)) for _ in range(concurrency))
        )
        # At least --min-streams per kind at each level, so that the percentiles mean something.
        paired: list[float] = []
        for _ in range(max(rounds, -(-min_streams // concurrency))):
            raw = await asyncio.gather(*(raw_stream(http, url, body) for _ in range(concurrency)))
            pool = await asyncio.gather(
                *(
                    pool_stream(ChatRequest(business_id=0, messages=messages, max_tokens=tokens))
                    for _ in range(concurrency)
                )
            )
            results["raw"] += raw
            results["pool"] += pool
            # Back-to-back rounds see the same load from the rest of the machine: their difference is
            # steadier than the difference of two distributions gathered over a minute of noisy neighbours.
            paired.append(statistics.median(r[0] for r in pool) - statistics.median(r[0] for r in raw))
    await close_clients()
    for kind, rows in results.items():
        out[f"{kind}_ttft_ms_p50"] = pct([r[0] for r in rows], 0.5)
        out[f"{kind}_ttft_ms_p95"] = pct([r[0] for r in rows], 0.95)
        out[f"{kind}_per_token_ms_p50"] = pct([r[1] for r in rows], 0.5)
    out["added_ttft_ms_p50"] = round(out["pool_ttft_ms_p50"] - out["raw_ttft_ms_p50"], 3)  # type: ignore[operator]
    out["added_ttft_ms_p95"] = round(out["pool_ttft_ms_p95"] - out["raw_ttft_ms_p95"], 3)  # type: ignore[operator]
    out["added_per_token_ms_p50"] = round(out["pool_per_token_ms_p50"] - out["raw_per_token_ms_p50"], 4)  # type: ignore[operator]
    out["added_ttft_ms_paired_p50"] = round(statistics.median(paired), 3)
    out["streams_per_kind"] = len(results["raw"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16)
    # 50 tokens/s per stream, like a loaded GPU server; faster saturates the Python test server at 64 streams.
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--min-streams", type=int, default=150, help="per kind and level")
    parser.add_argument("--output", default="pool_overhead", help="name of the results file")
    args = parser.parse_args()
    reply = " ".join(f"w{i}" for i in range(args.tokens))
    proc, url = start_server("--reply", reply, "--token-delay", str(args.token_delay))
    try:
        setup_django(
            LLAMA_POOL=url,
            LLAMA_MODEL="test-model",
            LLAMA_PROBE_INTERVAL="0",
            LLAMA_ENDPOINT_MAX_CONCURRENCY="256",
        )
        from inference import state

        state.reset()
        # The pool adds one Redis round trip before the request is sent; on a shared Redis it dominates.
        pings = []
        for _ in range(300):
            started = time.perf_counter()
            state.client().ping()
            pings.append((time.perf_counter() - started) * 1000)
        levels = [
            asyncio.run(measure(url, c, args.rounds, args.tokens, args.min_streams)) for c in args.levels
        ]
    finally:
        proc.terminate()
        proc.wait(10)
    write(
        args.output,
        {
            "tokens_per_reply": args.tokens,
            "server_token_delay_s": args.token_delay,
            "rounds": args.rounds,
            "target": "added_ttft_ms_p50 < 2",
            "redis_ping_ms_p50": pct(pings, 0.5),
            "redis_ping_ms_p95": pct(pings, 0.95),
            "levels": levels,
        },
    )


if __name__ == "__main__":
    main()
