"""The pool never fails a reply it could have served: empty completions are retried, busy is not down, panic
mode when nothing is healthy, queueing for slots (endpoint and business), /v1 base URLs and the embedded
endpoint's one slot. Real loopback servers and the real Redis."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from devstack import llama, paths
from inference import health, metrics, state
from inference.chat import stream_chat
from inference.endpoints import (
    Endpoint,
    apool_endpoints,
    base_url,
    reset_endpoint_cache,
)
from inference.health import pool_status, probe
from inference.models import InferenceCall, InferenceEndpoint
from inference.types import BudgetExceeded, ChatRequest, PoolUnavailable, StreamEnd, TextDelta
from tests.factories import BusinessFactory
from tests.inference_server import InferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

Factory = Callable[..., InferenceServer]
DEFAULT_REPLY = "Hello from the test inference server."


def ask(business_id: int = 0, text: str = "hi") -> ChatRequest:
    return ChatRequest(business_id=business_id, messages=[{"role": "user", "content": text}])


async def run(request: ChatRequest) -> tuple[str, StreamEnd]:
    parts: list[str] = []
    async with contextlib.aclosing(stream_chat(request)) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, StreamEnd):
                end = event
    return "".join(parts), end


async def calls() -> list[tuple[str, str, int]]:
    return [
        row async for row in InferenceCall.objects.order_by("pk").values_list("outcome", "endpoint", "tries")
    ]


# --- Empty completions ------------------------------------------------------------------------------------


async def test_an_empty_completion_is_retried_on_the_same_endpoint_when_it_is_the_only_one(
    pool_server: InferenceServer,
) -> None:
    pool_server.fault("empty", times=1)
    text, end = await run(ask())
    assert (text, end.endpoint, end.finish_reason) == (DEFAULT_REPLY, pool_server.url, "stop")
    assert pool_server.chat_requests == 2
    assert await calls() == [("ok", pool_server.url, 2)]
    url = pool_server.url
    assert state.read_states([url])[url].failures == 0  # the success after it reset the count


async def test_an_empty_completion_fails_over_to_another_endpoint(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    empty, good = inference_server_factory(), inference_server_factory(reply="From the good one.")
    empty.fault("empty")
    llama_pool(empty, good, LLAMA_MAX_TRIES=2)
    for _ in range(4):
        text, end = await run(ask())
        assert (text, end.endpoint) == ("From the good one.", good.url)
    assert good.chat_requests == 4
    # Every empty try counted against the endpoint that sent it.
    assert state.read_states([empty.url])[empty.url].failures == empty.chat_requests


async def test_a_reply_of_only_whitespace_is_an_empty_completion(pool_server: InferenceServer) -> None:
    pool_server.script_queue(["\n \n", "\nReal words."])
    text, _ = await run(ask())
    assert text == "\nReal words."  # leading whitespace is held back, then shown with the first word
    assert pool_server.chat_requests == 2


async def test_every_try_empty_raises_pool_unavailable_after_max_tries(
    pool_server: InferenceServer, settings: Any
) -> None:
    settings.LLAMA_CIRCUIT_FAILURES = 10
    pool_server.fault("empty")
    with pytest.raises(PoolUnavailable) as error:
        await run(ask())
    assert str(error.value) == (
        f"no endpoint answered after 3 tries ({pool_server.url}: empty_completion: the stream ended with no "
        "text and no tool call (finish_reason none, 0 whitespace characters))"
    )
    assert pool_server.chat_requests == 3
    assert await calls() == [("unavailable", pool_server.url, 3)]


# --- Busy is not down ---------------------------------------------------------------------------------------


@pytest.fixture
def short_probe_timeout() -> Iterator[None]:
    saved = health.PROBE_TIMEOUT
    health.PROBE_TIMEOUT = 0.3
    yield
    health.PROBE_TIMEOUT = saved


async def endpoint_of(server: InferenceServer) -> Endpoint:
    return next(e for e in await apool_endpoints() if e.url == server.url)


async def test_an_endpoint_with_requests_in_flight_is_not_probed(
    pool_server: InferenceServer, short_probe_timeout: None
) -> None:
    pool_server.fault("busy_probe")
    pool_server.script("word " * 30)
    pool_server.token_delay = 0.05
    reply = asyncio.ensure_future(run(ask()))
    assert await asyncio.to_thread(pool_server.wait_for, lambda: pool_server.active_streams == 1)
    result = await asyncio.to_thread(probe, await endpoint_of(pool_server))
    assert (result.ok, result.reason) == (True, "busy: not probed with 1 request(s) in flight")
    assert pool_server.requests_by_path.get("/health") is None  # nothing was sent to the busy server
    text, _ = await reply
    assert text == "word " * 30
    [row] = await sync_to_async(pool_status)()
    assert (row.healthy, row.health_reason) == (True, "busy: not probed with 1 request(s) in flight")


async def test_a_probe_that_times_out_behind_a_generation_records_busy_not_unhealthy(
    pool_server: InferenceServer, short_probe_timeout: None
) -> None:
    # The probe starts while the endpoint is idle; a reply takes the slot and the server's lock before the
    # probe is answered (llama-cpp-python's /v1/models waits for the generation): the probe times out.
    pool_server.fault("busy_probe")
    pool_server.script("word " * 20)
    pool_server.token_delay = 0.05
    async with httpx.AsyncClient() as raw:
        # Another worker's generation, already running on the server; its slot is taken once the probe is
        # under way (the probe saw an idle endpoint).
        body = {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        async with raw.stream("POST", f"{pool_server.url}/v1/chat/completions", json=body) as response:
            probing = asyncio.ensure_future(asyncio.to_thread(probe, await endpoint_of(pool_server)))
            assert await asyncio.to_thread(
                pool_server.wait_for, lambda: "/health" in pool_server.requests_by_path
            )
            lease = state.new_lease()
            state.acquire(state.inflight_key(pool_server.url), lease, 0)
            result = await probing
            state.release(state.inflight_key(pool_server.url), lease)
            async for _ in response.aiter_bytes():
                pass
    assert result.ok is True
    assert result.reason == "busy: the probe timed out (ReadTimeout) with 1 request(s) in flight"
    assert state.read_states([pool_server.url])[pool_server.url].healthy is True
    pool_server.clear_faults()
    pool_server.script("served")
    text, end = await run(ask())
    assert (text, end.endpoint) == ("served", pool_server.url)
    assert [c[0] for c in await calls()] == ["ok"]


async def test_lazy_probes_between_queued_replies_never_mark_the_endpoint_unhealthy(
    pool_server: InferenceServer, llama_pool: Callable[..., None], settings: Any, short_probe_timeout: None
) -> None:
    # Each reply's end starts a lazy probe while the next queued reply takes the one slot: the probe either
    # finds it busy and is skipped, or times out behind the generation; neither is "unhealthy".
    llama_pool(pool_server, LLAMA_PROBE_INTERVAL=0.01, LLAMA_QUEUE_TIMEOUT=10)
    settings.LLAMA_POOL = f"{pool_server.url};max=1"
    pool_server.fault("busy_probe")
    pool_server.script("word " * 10)
    pool_server.token_delay = 0.05  # about 0.5 s of generation; a probe gives up after 0.3 s
    results = await asyncio.gather(*(run(ask()) for _ in range(3)))
    assert [text for text, _ in results] == ["word " * 10] * 3
    await asyncio.sleep(0.5)  # the last probe thread's outcome is in Redis
    assert state.read_states([pool_server.url])[pool_server.url].healthy is not False
    assert pool_server.peak_streams == 1
    assert [c[0] for c in await calls()] == ["ok"] * 3
    assert "bizagent_inference_panic_total{" not in metrics.render().decode()


async def test_a_real_success_clears_an_unhealthy_mark(pool_server: InferenceServer) -> None:
    state.write_health(pool_server.url, ok=False, reason="ReadTimeout: timed out", models=[], latency_ms=2000)
    await run(ask())
    current = state.read_states([pool_server.url])[pool_server.url]
    assert (current.healthy, current.health_reason) == (True, "ok (a request succeeded)")


# --- Panic mode -------------------------------------------------------------------------------------------------


async def test_with_every_endpoint_unhealthy_the_pool_still_tries_them(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    a, b = inference_server_factory(), inference_server_factory()
    llama_pool(a, b)
    for server in (a, b):
        state.write_health(server.url, ok=False, reason="ReadTimeout: timed out", models=[], latency_ms=2000)
    text, end = await run(ask())
    assert text == DEFAULT_REPLY
    assert a.chat_requests + b.chat_requests == 1
    assert await calls() == [("ok", end.endpoint, 1)]
    assert f'bizagent_inference_panic_total{{endpoint="{end.endpoint}"}} 1.0' in metrics.render().decode()
    # The success cleared the mark: the next pick is an ordinary one.
    assert state.read_states([end.endpoint])[end.endpoint].healthy is True


async def test_with_every_circuit_open_the_pool_still_tries_them(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    llama_pool(inference_server, LLAMA_CIRCUIT_FAILURES=1, LLAMA_CIRCUIT_COOLDOWN=60)
    assert state.record_failure(inference_server.url, "HTTP 500: injected 500") is True
    text, _ = await run(ask())
    assert text == DEFAULT_REPLY
    current = state.read_states([inference_server.url])[inference_server.url]
    assert (current.circuit, current.failures) == ("closed", 0)


async def test_a_healthy_endpoint_is_preferred_to_panic(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    sick, good = inference_server_factory(), inference_server_factory()
    llama_pool(sick, good)
    state.write_health(sick.url, ok=False, reason="not ready", models=[], latency_ms=1)
    for _ in range(5):
        _, end = await run(ask())
        assert end.endpoint == good.url
    assert sick.chat_requests == 0
    assert "bizagent_inference_panic_total{" not in metrics.render().decode()


async def test_panic_mode_respects_caps_and_queues(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    inference_server.token_delay = 0.02
    llama_pool(inference_server)
    settings.LLAMA_POOL = f"{inference_server.url};max=1"
    state.write_health(inference_server.url, ok=False, reason="not ready", models=[], latency_ms=1)
    results = await asyncio.gather(*(run(ask()) for _ in range(3)))
    assert [text for text, _ in results] == [DEFAULT_REPLY] * 3
    assert inference_server.peak_streams == 1


# --- Queueing for slots ---------------------------------------------------------------------------------------


async def test_a_one_slot_endpoint_serves_concurrent_replies_in_turn(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    inference_server.token_delay = 0.03  # about 0.15 s a reply
    llama_pool(inference_server, LLAMA_QUEUE_TIMEOUT=10)
    settings.LLAMA_POOL = f"{inference_server.url};max=1"
    results = await asyncio.gather(*(run(ask(text=f"question {i}")) for i in range(8)))
    assert [text for text, _ in results] == [DEFAULT_REPLY] * 8
    assert (inference_server.chat_requests, inference_server.peak_streams) == (8, 1)
    assert [c[0] for c in await calls()] == ["ok"] * 8


async def test_first_token_and_reply_timeouts_count_from_the_slot_not_from_the_wait(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    # Each reply takes about 0.6 s; the third waits about 1.2 s for the slot, longer than both its
    # first-token timeout and its reply timeout, and is still served.
    inference_server.script("a b c d e f g")
    inference_server.token_delay = 0.1
    llama_pool(
        inference_server, LLAMA_FIRST_TOKEN_TIMEOUT=0.5, LLAMA_REPLY_TIMEOUT=1.0, LLAMA_QUEUE_TIMEOUT=10
    )
    settings.LLAMA_POOL = f"{inference_server.url};max=1"
    started = time.perf_counter()
    results = await asyncio.gather(*(run(ask()) for _ in range(3)))
    assert time.perf_counter() - started > 1.5
    assert [text for text, _ in results] == ["a b c d e f g"] * 3
    assert inference_server.chat_requests == 3  # no try timed out and was repeated


async def test_the_queue_wait_is_bounded(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    inference_server.fault("hang", after=1, times=1)
    llama_pool(inference_server, LLAMA_QUEUE_TIMEOUT=0.3)
    settings.LLAMA_POOL = f"{inference_server.url};max=1"
    holder = asyncio.ensure_future(run(ask()))
    assert await asyncio.to_thread(inference_server.wait_for, lambda: inference_server.active_streams == 1)
    started = time.perf_counter()
    with pytest.raises(PoolUnavailable, match=r"at its cap of 1 requests in flight for 0.3 s"):
        await run(ask())
    assert 0.25 < time.perf_counter() - started < 1.5
    assert inference_server.chat_requests == 1
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder


async def test_the_business_cap_queues_instead_of_refusing(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    shop = await sync_to_async(BusinessFactory.create)()
    inference_server.token_delay = 0.03
    llama_pool(inference_server, LLAMA_BUSINESS_MAX_CONCURRENCY=1, LLAMA_QUEUE_TIMEOUT=10)
    refused_before = await sync_to_async(
        refused_calls
    )()  # the counters are the process's: earlier tests may have refused some
    results = await asyncio.gather(*(run(ask(shop.pk)) for _ in range(4)))
    assert [text for text, _ in results] == [DEFAULT_REPLY] * 4
    assert (inference_server.chat_requests, inference_server.peak_streams) == (4, 1)
    assert await sync_to_async(refused_calls)() == refused_before


def refused_calls() -> float:
    """Chat calls refused by a business's cap or budget, as the metrics count them."""
    samples = [
        line
        for line in metrics.render().decode().splitlines()
        if 'outcome="refused"' in line and not line.startswith("#")
    ]
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples)


async def test_the_business_cap_refuses_after_the_queue_timeout(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    shop = await sync_to_async(BusinessFactory.create)()
    inference_server.fault("hang", after=1, times=1)
    llama_pool(inference_server, LLAMA_BUSINESS_MAX_CONCURRENCY=1, LLAMA_QUEUE_TIMEOUT=0.3)
    holder = asyncio.ensure_future(run(ask(shop.pk)))
    assert await asyncio.to_thread(inference_server.wait_for, lambda: inference_server.active_streams == 1)
    with pytest.raises(BudgetExceeded) as refused:
        await run(ask(shop.pk))
    assert str(refused.value) == (
        f"business {shop.pk} had 1 inference requests in flight (LLAMA_BUSINESS_MAX_CONCURRENCY) for 0.3 s "
        "(LLAMA_QUEUE_TIMEOUT); try again when one finishes"
    )
    assert inference_server.chat_requests == 1
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder


# --- Base URLs and the embedded endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("http://gpu1:8000", "http://gpu1:8000"),
        ("http://gpu1:8000/", "http://gpu1:8000"),
        ("http://gpu1:8000/v1", "http://gpu1:8000"),
        ("http://gpu1:8000/v1/", "http://gpu1:8000"),
        ("https://proxy.example/llm/v1", "https://proxy.example/llm"),
        ("http://gpu1:8000/v10", "http://gpu1:8000/v10"),
    ],
)
def test_base_urls_are_written_with_or_without_v1(written: str, expected: str) -> None:
    assert base_url(written) == expected


async def test_a_v1_base_url_in_llama_pool_is_served(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    llama_pool(inference_server)
    settings.LLAMA_POOL = f"{inference_server.url}/v1/;max=4"
    text, end = await run(ask())
    assert (text, end.endpoint) == (DEFAULT_REPLY, inference_server.url)
    assert [r.path for r in inference_server.requests] == ["/v1/chat/completions"]


async def test_a_v1_base_url_from_the_admin_is_served(
    inference_server: InferenceServer,
    llama_pool: Callable[..., None],
    settings: Any,
) -> None:
    llama_pool()
    settings.LLAMA_POOL = ""
    settings.LLAMA_EMBEDDED_URL = ""  # no embedded server in this pool
    await InferenceEndpoint.objects.acreate(name="gpu", base_url=f"{inference_server.url}/v1")
    reset_endpoint_cache()
    text, end = await run(ask())
    assert (text, end.endpoint) == (DEFAULT_REPLY, inference_server.url)
    assert [r.path for r in inference_server.requests] == ["/v1/chat/completions"]


async def test_the_embedded_endpoint_has_one_slot(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: Any
) -> None:
    inference_server.model = settings.LLAMA_EMBEDDED_MODEL
    inference_server.token_delay = 0.02
    llama_pool(inference_server, LLAMA_ENDPOINT_MAX_CONCURRENCY=64)
    settings.LLAMA_POOL = ""
    settings.LLAMA_EMBEDDED_URL = inference_server.url + "/"
    [endpoint] = await apool_endpoints()
    assert (endpoint.url, endpoint.max_concurrency, endpoint.source) == (inference_server.url, 1, "embedded")
    results = await asyncio.gather(*(run(ask()) for _ in range(4)))
    assert [text for text, _ in results] == [DEFAULT_REPLY] * 4
    assert inference_server.peak_streams == 1


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_the_embedded_server_is_started_without_interrupts_on_every_core() -> None:
    # Parsed by llama-cpp-python's own command line parser: the flag names are the installed server's.
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    args = parser.parse_args(llama.llama_server_args(Path("/models/smollm2.gguf"), 8765)[3:])
    server = parse_model_from_args(ServerSettings, args)
    model = parse_model_from_args(ModelSettings, args)
    assert (server.interrupt_requests, server.port) == (False, 8765)
    assert (model.n_threads, model.model_alias) == (os.cpu_count(), paths.LLAMA_MODEL_NAME)
