"""The pool client against the real llama.cpp server with SmolLM2-135M (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from agents.inference.client import complete_chat, stream_chat
from agents.inference.health import probe_pool
from agents.inference.types import ChatRequest, StreamEnd, TextDelta, Usage
from config import embedded

pytestmark = [
    pytest.mark.llama,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (pip install -e '.[local-model]')",
    ),
]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    port = embedded.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded.smollm2_model_path()),
            "--model_alias",
            embedded.LLAMA_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, "llama_cpp.server exited while starting"
            time.sleep(0.2)
        else:
            pytest.fail("llama_cpp.server did not answer /v1/models within 120 s")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.django_db(transaction=True)
def test_streams_a_reply_from_smollm2(
    llama_server: str, llama_pool: Callable[..., None], settings: object
) -> None:
    llama_pool(LLAMA_FIRST_TOKEN_TIMEOUT=60, LLAMA_IDLE_TIMEOUT=60)
    settings.LLAMA_POOL = llama_server  # type: ignore[attr-defined]
    settings.LLAMA_MODEL = embedded.LLAMA_MODEL_NAME  # type: ignore[attr-defined]
    [probe] = probe_pool()
    assert (probe.ok, probe.models) == (True, (embedded.LLAMA_MODEL_NAME,))

    request = ChatRequest(
        business_id=0,
        messages=[{"role": "user", "content": "Say hello in three words."}],
        max_tokens=12,
        temperature=0.0,
        affinity_key="conv-llama",
    )

    async def run() -> list[object]:
        events: list[object] = []
        async with contextlib.aclosing(stream_chat(request)) as stream:
            async for event in stream:
                events.append(event)
        return events

    events = asyncio.run(run())
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas and "".join(d.text for d in deltas).strip()
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.endpoint == llama_server
    assert end.finish_reason in ("stop", "length")
    assert end.first_token_ms is not None and end.first_token_ms <= end.total_ms
    usages = [e for e in events if isinstance(e, Usage)]
    if usages:  # llama-cpp-python reports usage in the stream only in some versions
        assert 0 < usages[0].completion_tokens <= 12 and usages[0].prompt_tokens > 5

    result = asyncio.run(complete_chat(request))
    assert result.text.strip()
    assert result.endpoint == llama_server
