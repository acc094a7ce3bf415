"""The pool client and the answers against the real llama.cpp server with SmolLM2-135M (the default)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from agents.prices import find_prices
from agents.respond import Done, respond
from agents.respond import TextDelta as RespondDelta
from agents.selectors import agent_for
from devstack import llama, paths
from devstack.handles import free_port
from inference.chat import complete_chat, stream_chat
from inference.health import probe_pool
from inference.types import ChatRequest, StreamEnd, TextDelta, Usage
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = [
    pytest.mark.llama,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (pip install -e '.[local-model]')",
    ),
]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The embedded server's own command line: its flags (one request never interrupts another) are tested too.
    proc = subprocess.Popen(
        llama.llama_server_args(llama.smollm2_model_path(), port),
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
    settings.LLAMA_MODEL = paths.LLAMA_MODEL_NAME  # type: ignore[attr-defined]
    [probe] = probe_pool()
    assert (probe.ok, probe.models) == (True, (paths.LLAMA_MODEL_NAME,))

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


FAQ_MD = """# Help

## Returns
Unused gear can be returned within 30 days. Tents that have been used outdoors cannot be returned.
"""


@pytest.mark.django_db(transaction=True)
def test_answers_from_the_catalog_with_the_real_model(
    llama_server: str,
    llama_pool: Callable[..., None],
    settings: object,
    import_catalog: Callable[..., object],
) -> None:
    """The weak model answers real questions: every fact comes from the data, nothing it says unchecked
    reaches the customer, and nothing is empty."""
    llama_pool(LLAMA_FIRST_TOKEN_TIMEOUT=60, LLAMA_IDLE_TIMEOUT=60)
    settings.LLAMA_POOL = llama_server  # type: ignore[attr-defined]
    settings.LLAMA_MODEL = paths.LLAMA_MODEL_NAME  # type: ignore[attr-defined]
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    import_catalog(business, FAQ_MD, filename="faq.md", embed=True)
    agent = agent_for(business)
    prices = {Decimal("249.00"), Decimal("189.50"), Decimal("39.90")}

    async def ask(question: str) -> tuple[str, Done]:
        shown: list[str] = []
        async with contextlib.aclosing(
            respond(business=business, agent=agent, turns=[], question=question, affinity_key="llama")
        ) as events:
            async for event in events:
                if isinstance(event, RespondDelta):
                    shown.append(event.text)
                elif isinstance(event, Done):
                    return "".join(shown), event
        raise AssertionError("respond() ended without Done")

    for question, fact in [
        ("how much is the tent?", "249.00 EUR"),
        ("is the alpine down sleeping bag in stock?", "out of stock"),
        ("Can I return a tent I used outdoors?", "cannot be returned"),
        ("hello!", ""),
    ]:
        shown, done = asyncio.run(ask(question))
        assert done.text.strip(), question
        assert fact in done.text, (question, done.text)
        assert shown == done.text, "what was streamed is what is kept"
        assert done.grounding["ok"] is True, done.grounding
        assert {m.amount for m in find_prices(done.text)} <= prices, done.text
        assert "<<<" not in done.text
