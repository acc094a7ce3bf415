"""Two worker processes share the pool's in-flight counts through Redis (real subprocesses)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from inference import state
from inference.chat import stream_chat
from inference.types import ChatRequest, PoolUnavailable
from tests.inference_server import InferenceServer

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, contextlib, os, sys
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
django.setup()
from inference.chat import stream_chat
from inference.types import ChatRequest, TextDelta

async def main():
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    async def consume():
        request = ChatRequest(business_id=0, messages=[{"role": "user", "content": "hi"}])
        async with contextlib.aclosing(stream_chat(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    print("streaming", flush=True)
    task = asyncio.ensure_future(consume())
    await stdin_closed
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    print("released", flush=True)

asyncio.run(main())
"""


def start_worker(pool: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LLAMA_POOL": pool,
        "LLAMA_MODEL": "test-model",
        "LLAMA_PROBE_INTERVAL": "0",
        "LLAMA_REPLY_TIMEOUT": "20",
        "LLAMA_QUEUE_TIMEOUT": "0",
        "LLAMA_IDLE_TIMEOUT": "20",
        # The worker records its calls in the test database, like a Celery worker in production.
        "DATABASE_URL": f"postgresql://postgres@/{connection.settings_dict['NAME']}?host={connection.settings_dict['HOST']}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "streaming"
    return proc


def inflight(url: str) -> int:
    return state.read_states([url])[url].inflight


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_share_in_flight_counts_and_caps(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: object
) -> None:
    inference_server.fault("hang", after=1)
    llama_pool(inference_server, LLAMA_QUEUE_TIMEOUT=0.2, LLAMA_REPLY_TIMEOUT=20)
    pool = f"{inference_server.url};max=2"
    settings.LLAMA_POOL = pool  # type: ignore[attr-defined]
    url = inference_server.url
    first = start_worker(pool)
    second = start_worker(pool)
    try:
        assert inflight(url) == 2
        assert inference_server.active_streams == 2

        # This process sees the two streams of the other processes and respects the endpoint's cap.
        async def third() -> None:
            request = ChatRequest(business_id=0, messages=[{"role": "user", "content": "hi"}])
            async with contextlib.aclosing(stream_chat(request)) as events:
                async for _ in events:
                    pass

        with pytest.raises(PoolUnavailable, match="at its cap of 2 requests in flight"):
            asyncio.run(third())
        assert inference_server.chat_requests == 2

        # A worker that ends its stream gives its slot back at once.
        assert first.stdout is not None
        first.stdin.close()  # type: ignore[union-attr]
        assert first.stdout.readline().strip() == "released"
        assert first.wait(10) == 0
        assert inflight(url) == 1

        # A worker killed mid-reply cannot give it back: its lease expires after the longest possible reply.
        second.send_signal(signal.SIGKILL)
        second.wait(10)
        assert inflight(url) == 1
        lease = state.client().zrange(state.inflight_key(url), 0, -1, withscores=True)[0]
        assert 20 + 0 + 5 - 2 < lease[1] - time.time() <= 25  # expiry = start + reply timeout + queue + 5 s
        # Fast-forward: rescore the dead worker's lease as if its reply deadline had passed.
        state.client().zadd(state.inflight_key(url), {lease[0]: time.time() - 1})
        assert inflight(url) == 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
