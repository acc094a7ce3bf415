"""Routing, failover, circuit breaking, affinity, caps and cancellation, against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async

from inference import state
from inference.chat import stream_chat
from inference.endpoints import apool_endpoints
from inference.models import InferenceCall
from inference.routing import ring_order
from inference.types import (
    BudgetExceeded,
    ChatRequest,
    PoolUnavailable,
    StreamCut,
    StreamEnd,
    TextDelta,
)
from tests.factories import BusinessFactory
from tests.inference_server import InferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

Factory = Callable[..., InferenceServer]


def ask(business_id: int = 0, affinity_key: str | None = None, text: str = "hi") -> ChatRequest:
    return ChatRequest(
        business_id=business_id, messages=[{"role": "user", "content": text}], affinity_key=affinity_key
    )


async def run(request: ChatRequest) -> tuple[str, StreamEnd]:
    parts: list[str] = []
    async with contextlib.aclosing(stream_chat(request)) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, StreamEnd):
                end = event
    return "".join(parts), end


async def key_preferring(url: str) -> str:
    """An affinity key whose ring walk starts at ``url``."""
    endpoints = await apool_endpoints()
    for i in range(10_000):
        if ring_order(endpoints, f"conv-{i}")[0] == url:
            return f"conv-{i}"
    raise AssertionError("no key found")


async def hold_stream(request: ChatRequest) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A stream that has received its first token and stays open until the task is cancelled."""
    started = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(stream_chat(request)) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    started.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(started.wait(), 5)
    return task, started


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


# --- Failover ----------------------------------------------------------------------------------------------


async def test_failures_before_the_first_token_fail_over_to_another_endpoint(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    broken = inference_server_factory()
    loading = inference_server_factory()
    good = inference_server_factory(reply="From the good one.")
    broken.fault("status", status=500)
    loading.fault("loading")
    llama_pool(broken, loading, good)
    key = await key_preferring(broken.url)
    order = ring_order(await apool_endpoints(), key)

    text, end = await run(ask(affinity_key=key))

    assert (text, end.endpoint) == ("From the good one.", good.url)
    assert broken.chat_requests == 1
    # The loading server is tried only if it came before the good one in the fallback order.
    assert loading.chat_requests in (0, 1)
    call = await InferenceCall.objects.aget()
    assert (call.outcome, call.endpoint, call.tries) == (
        "ok",
        good.url,
        1 + broken.chat_requests + loading.chat_requests,
    )
    assert order[0] == broken.url


async def test_a_slow_first_token_times_out_and_fails_over(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    slow = inference_server_factory()
    fast = inference_server_factory(reply="fast")
    slow.fault("slow_first_token", delay=3)
    llama_pool(slow, fast, LLAMA_FIRST_TOKEN_TIMEOUT=0.3)
    started = time.perf_counter()
    text, end = await run(ask(affinity_key=await key_preferring(slow.url)))
    assert (text, end.endpoint) == ("fast", fast.url)
    assert time.perf_counter() - started < 1.5
    assert slow.wait_for(
        lambda: slow.aborted_streams == 1, 2
    )  # the slow request was closed, not left running


async def test_every_try_failing_raises_pool_unavailable_with_each_reason(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    a, b = inference_server_factory(), inference_server_factory()
    a.fault("status", status=429)
    b.fault("status", status=503, shape="flat", message="overloaded")
    llama_pool(a, b)
    with pytest.raises(PoolUnavailable) as error:
        await run(ask())
    message = str(error.value)
    # LLAMA_MAX_TRIES (3): each endpoint once, then one of them again after a short backoff.
    assert message.startswith("no endpoint answered after 3 tries (")
    assert f"{a.url}: HTTP 429: injected 429" in message
    assert f"{b.url}: HTTP 503: overloaded" in message
    assert sorted((a.chat_requests, b.chat_requests)) == [1, 2]
    assert (await InferenceCall.objects.aget()).outcome == "unavailable"


async def test_no_retry_after_the_first_token(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    cutting = inference_server_factory(reply="one two three four")
    other = inference_server_factory()
    cutting.fault("drop", after=2)
    llama_pool(cutting, other)
    with pytest.raises(StreamCut) as cut:
        await run(ask(affinity_key=await key_preferring(cutting.url)))
    assert cut.value.partial_text == "one two "
    assert (cutting.chat_requests, other.chat_requests) == (1, 0)
    call = await InferenceCall.objects.aget()
    assert (call.outcome, call.endpoint, call.tries) == ("cut", cutting.url, 1)


# --- Circuit breaker -------------------------------------------------------------------------------------------


async def test_circuit_opens_after_k_failures_then_a_single_trial_closes_it(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    failing, other = inference_server_factory(), inference_server_factory()
    llama_pool(failing, other, LLAMA_CIRCUIT_FAILURES=2, LLAMA_CIRCUIT_COOLDOWN=0.4, LLAMA_MAX_TRIES=1)
    url = failing.url
    key = await key_preferring(url)
    failing.fault("status", status=500, times=2)
    for _ in range(2):
        with pytest.raises(PoolUnavailable):
            await run(ask(affinity_key=key))
    assert state.read_states([url])[url].circuit == "open"

    # Open while another endpoint is healthy: nothing is sent to it at all.
    for _ in range(3):
        _, end = await run(ask(affinity_key=key))
        assert end.endpoint == other.url
    assert failing.chat_requests == 2

    await asyncio.sleep(0.45)
    _, end = await run(ask(affinity_key=key))  # the half-open trial succeeds
    assert end.endpoint == url
    current = state.read_states([url])[url]
    assert (current.circuit, current.failures) == ("closed", 0)
    assert failing.chat_requests == 3


async def test_a_success_resets_failures_counted_below_the_threshold(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    # The pick tells whether the endpoint's circuit holds anything to reset: a success after a clean pick
    # writes nothing, one after a counted failure clears it (failures in a row, not in all).
    llama_pool(inference_server, LLAMA_CIRCUIT_FAILURES=3, LLAMA_MAX_TRIES=1)
    url = inference_server.url
    await run(ask())
    assert state.client().exists(state.circuit_key(url)) == 0
    inference_server.fault("status", status=500, times=2)
    for _ in range(2):
        with pytest.raises(PoolUnavailable):
            await run(ask())
    assert state.read_states([url])[url].failures == 2
    await run(ask())
    assert (state.read_states([url])[url].circuit, state.read_states([url])[url].failures) == ("closed", 0)
    inference_server.fault("status", status=500, times=2)
    for _ in range(2):
        with pytest.raises(PoolUnavailable):
            await run(ask())
    assert state.read_states([url])[url].circuit == "closed"  # 2 in a row again, under the threshold of 3


async def test_a_failed_half_open_trial_reopens_at_once(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    llama_pool(inference_server, LLAMA_CIRCUIT_FAILURES=1, LLAMA_CIRCUIT_COOLDOWN=0.3, LLAMA_MAX_TRIES=1)
    url = inference_server.url
    inference_server.fault("status", status=500, times=2)
    with pytest.raises(PoolUnavailable):
        await run(ask())
    await asyncio.sleep(0.35)
    assert state.claim_trial(url) is True
    assert state.claim_trial(url) is False  # only one trial at a time, across every worker
    state.client().delete(state.circuit_key(url) + ":trial")
    with pytest.raises(PoolUnavailable):
        await run(ask())  # the trial fails
    current = state.read_states([url])[url]
    assert current.circuit == "open"
    assert current.open_until > time.time()
    assert inference_server.chat_requests == 2


# --- Affinity ---------------------------------------------------------------------------------------------------


async def test_affinity_holds_a_conversation_on_one_endpoint(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    servers = [inference_server_factory() for _ in range(3)]
    llama_pool(*servers)
    preferred = ring_order(await apool_endpoints(), "conversation-7")[0]
    ends = [(await run(ask(affinity_key="conversation-7")))[1].endpoint for _ in range(6)]
    assert ends == [preferred] * 6
    assert sorted(s.chat_requests for s in servers) == [0, 0, 6]


async def test_affinity_yields_to_the_next_on_the_ring_when_over_its_load_bound(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    servers = [inference_server_factory() for _ in range(3)]
    llama_pool(*servers, LLAMA_AFFINITY_LOAD_FACTOR=1.25)
    order = ring_order(await apool_endpoints(), "conversation-7")
    # Other workers have 4 requests in flight on the preferred endpoint: its bound is ceil(1.25*5/3) = 3.
    for _ in range(4):
        state.acquire(state.inflight_key(order[0]), state.new_lease(), 0)
    _, end = await run(ask(affinity_key="conversation-7"))
    assert end.endpoint == order[1]
    # Back under the bound, the conversation returns to its endpoint.
    state.client().delete(state.inflight_key(order[0]))
    _, end = await run(ask(affinity_key="conversation-7"))
    assert end.endpoint == order[0]


async def test_without_affinity_load_spreads_by_weight(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    heavy, light = inference_server_factory(token_delay=0.01), inference_server_factory(token_delay=0.01)
    llama_pool(heavy, light, weights=[3, 1])
    await asyncio.gather(*(run(ask()) for _ in range(40)))
    assert heavy.chat_requests + light.chat_requests == 40
    assert heavy.chat_requests > light.chat_requests


# --- Cancellation ------------------------------------------------------------------------------------------------


async def test_cancelling_the_task_closes_the_upstream_connection_at_once(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    inference_server.script("word " * 200)
    inference_server.token_delay = 0.05
    llama_pool(inference_server)
    task, _ = await hold_stream(ask())
    assert inference_server.active_streams == 1
    cancelled_at = time.perf_counter()
    await stop(task)
    assert inference_server.wait_for(lambda: inference_server.aborted_streams == 1, 1)
    assert time.perf_counter() - cancelled_at < 0.5
    assert inference_server.active_streams == 0
    url = inference_server.url
    assert state.read_states([url])[url].inflight == 0
    assert (await InferenceCall.objects.aget()).outcome == "cancelled"


async def test_closing_the_generator_closes_the_upstream_connection(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    inference_server.script("word " * 200)
    inference_server.token_delay = 0.05
    llama_pool(inference_server)
    stream = stream_chat(ask())
    first = await anext(stream)
    assert first == TextDelta("word ")
    await stream.aclose()
    assert inference_server.wait_for(lambda: inference_server.aborted_streams == 1, 1)
    assert inference_server.active_streams == 0


# --- Caps and budgets ---------------------------------------------------------------------------------------------


async def test_endpoint_cap_queues_then_gives_up(
    inference_server: InferenceServer, llama_pool: Callable[..., None], settings: object
) -> None:
    inference_server.fault("hang", after=1)
    llama_pool(inference_server, LLAMA_QUEUE_TIMEOUT=0.2)
    settings.LLAMA_POOL = f"{inference_server.url};max=1"  # type: ignore[attr-defined]
    task, _ = await hold_stream(ask())
    with pytest.raises(PoolUnavailable, match="at its cap of 1 requests in flight"):
        await run(ask())
    assert inference_server.chat_requests == 1
    await stop(task)
    inference_server.clear_faults()
    text, _ = await run(ask())
    assert text == "Hello from the test inference server."


async def test_business_concurrency_cap_refuses_only_that_business_after_the_queue_timeout(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    shop_a, shop_b = (
        await sync_to_async(BusinessFactory.create)(),
        await sync_to_async(BusinessFactory.create)(),
    )
    inference_server.fault("hang", after=1, times=1)
    llama_pool(inference_server, LLAMA_BUSINESS_MAX_CONCURRENCY=1, LLAMA_QUEUE_TIMEOUT=0.2)
    task, _ = await hold_stream(ask(shop_a.pk))
    with pytest.raises(BudgetExceeded) as refused:
        await run(ask(shop_a.pk))
    assert str(refused.value) == (
        f"business {shop_a.pk} had 1 inference requests in flight (LLAMA_BUSINESS_MAX_CONCURRENCY) for "
        "0.2 s (LLAMA_QUEUE_TIMEOUT); try again when one finishes"
    )
    assert inference_server.chat_requests == 1  # nothing was sent for the refused call
    from inference.metrics import render

    assert (
        'bizagent_inference_requests_total{endpoint="none",kind="chat",outcome="refused"} 1.0'
        in render().decode()
    )
    text, _ = await run(ask(shop_b.pk))  # another tenant is not affected
    assert text == "Hello from the test inference server."
    await stop(task)
    text, _ = await run(ask(shop_a.pk))  # the slot came back
    assert text == "Hello from the test inference server."


async def test_business_token_budget(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    shop_a, shop_b = (
        await sync_to_async(BusinessFactory.create)(),
        await sync_to_async(BusinessFactory.create)(),
    )
    inference_server.script("one two three four five six")
    llama_pool(inference_server, LLAMA_BUSINESS_TOKEN_BUDGET=10, LLAMA_BUSINESS_BUDGET_WINDOW=3600)
    await run(ask(shop_a.pk, text="a b c"))  # 3 + 6 = 9 tokens: under the budget
    await run(ask(shop_a.pk, text="a b c"))  # 18: the budget is spent after this one
    with pytest.raises(
        BudgetExceeded, match=rf"business {shop_a.pk} has used 18 of its 10 tokens in this 3600-second window"
    ):
        await run(ask(shop_a.pk))
    assert inference_server.chat_requests == 2
    await run(ask(shop_b.pk))
    assert inference_server.chat_requests == 3
    rows = [
        row
        async for row in InferenceCall.objects.order_by("pk").values_list(
            "business_id", "prompt_tokens", "completion_tokens"
        )
    ]
    assert rows == [(shop_a.pk, 3, 6), (shop_a.pk, 3, 6), (shop_b.pk, 1, 6)]
