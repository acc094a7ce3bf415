"""Failover: three endpoints under load, one killed (SIGKILL) a third of the way through.

Reports the share of requests that failed without having streamed anything (target: none), the replies
cut mid-stream on the killed endpoint (they had started: the client is told, never silently retried), and
time to first token before the kill, in the second after it, and after that.
Run: ``.venv/bin/python bench/failover.py [--seconds 9] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import time

from _pool_common import pct, setup_django, start_server, write


async def load(
    seconds: float, concurrency: int, kill_at: float, victim: subprocess.Popen[str]
) -> list[dict[str, object]]:
    from inference.chat import stream_chat
    from inference.transport import close_clients
    from inference.types import ChatRequest, PoolUnavailable, StreamCut, StreamEnd, TextDelta

    records: list[dict[str, object]] = []
    begin = time.perf_counter()
    stop_at = begin + seconds

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        victim.send_signal(signal.SIGKILL)

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            request = ChatRequest(
                business_id=0, messages=[{"role": "user", "content": "hi"}], affinity_key=f"c{n}-{i % 4}"
            )
            started = time.perf_counter()
            record: dict[str, object] = {
                "at": started - begin,
                "ttft_ms": None,
                "outcome": "ok",
                "endpoint": "",
            }
            try:
                async with contextlib.aclosing(stream_chat(request)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta) and record["ttft_ms"] is None:
                            record["ttft_ms"] = (time.perf_counter() - started) * 1000
                        elif isinstance(event, StreamEnd):
                            record["endpoint"] = event.endpoint
            except StreamCut as exc:
                record["outcome"], record["endpoint"] = "cut", exc.endpoint
            except PoolUnavailable:
                record["outcome"] = "unavailable"
            records.append(record)

    await asyncio.gather(killer(), *(worker(n) for n in range(concurrency)))
    await close_clients()
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    reply = " ".join(f"w{i}" for i in range(16))
    servers = [start_server("--reply", reply, "--token-delay", "0.01") for _ in range(3)]
    try:
        setup_django(
            LLAMA_POOL=",".join(url for _, url in servers),
            LLAMA_MODEL="test-model",
            LLAMA_PROBE_INTERVAL="0",
            LLAMA_CIRCUIT_FAILURES="3",
            LLAMA_CIRCUIT_COOLDOWN="30",
        )
        from inference import state

        state.reset()
        kill_at = args.seconds / 3
        victim, victim_url = servers[0]
        records = asyncio.run(load(args.seconds, args.concurrency, kill_at, victim))
    finally:
        for proc, _ in servers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    before = [r for r in records if float(r["at"]) < kill_at]  # type: ignore[arg-type]
    right_after = [r for r in records if kill_at <= float(r["at"]) < kill_at + 1]  # type: ignore[arg-type]
    later = [r for r in records if float(r["at"]) >= kill_at + 1]  # type: ignore[arg-type]

    def ttft(rows: list[dict[str, object]], q: float) -> float:
        return pct([float(r["ttft_ms"]) for r in rows if r["ttft_ms"] is not None], q)  # type: ignore[arg-type]

    cut = [r for r in records if r["outcome"] == "cut"]
    unavailable = [r for r in records if r["outcome"] == "unavailable"]
    write(
        "failover",
        {
            "endpoints": 3,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "killed_at_s": round(kill_at, 2),
            "requests": len(records),
            "failed_before_streaming": len(unavailable),
            "failed_before_streaming_share": round(len(unavailable) / max(1, len(records)), 5),
            "cut_mid_stream": len(cut),
            "cut_all_on_killed_endpoint": all(r["endpoint"] == victim_url for r in cut),
            "served_by_killed_before_kill": sum(
                1 for r in before if r["outcome"] == "ok" and r["endpoint"] == victim_url
            ),
            "served_by_killed_after_kill": sum(
                1
                for r in records
                if r["outcome"] == "ok" and r["endpoint"] == victim_url and float(r["at"]) > kill_at  # type: ignore[arg-type]
            ),
            "ttft_ms_p50_before": ttft(before, 0.5),
            "ttft_ms_p95_before": ttft(before, 0.95),
            "ttft_ms_p50_first_second_after": ttft(right_after, 0.5),
            "ttft_ms_p95_first_second_after": ttft(right_after, 0.95),
            "ttft_ms_max_first_second_after": ttft(right_after, 1.0),
            "ttft_ms_p50_later": ttft(later, 0.5),
            "ttft_ms_p95_later": ttft(later, 0.95),
        },
    )


if __name__ == "__main__":
    main()
