"""Probes, exposed state (/readyz, /metrics, the command), admin endpoints and embeddings."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from devstack.handles import free_port
from inference import state
from inference.chat import stream_chat
from inference.embeddings import embed, embed_sync
from inference.endpoints import parse_pool, reset_endpoint_cache
from inference.health import pool_readiness, pool_status, probe_pool
from inference.models import InferenceCall, InferenceEndpoint
from inference.types import ChatRequest, PoolUnavailable
from tests.factories import BusinessFactory
from tests.inference_server import InferenceServer, embedding_of

Factory = Callable[..., InferenceServer]


def test_llama_pool_syntax() -> None:
    endpoints = parse_pool(
        "http://a:8000/;weight=2;key=sk-1;model=llama;max=16, https://b:9000;kind=embeddings",
        default_key="sk-default",
        default_model="m",
        default_max=64,
    )
    assert [(e.url, e.weight, e.api_key, e.model, e.max_concurrency, e.kind) for e in endpoints] == [
        ("http://a:8000", 2, "sk-1", "llama", 16, "any"),
        ("https://b:9000", 1, "sk-default", "m", 64, "embeddings"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a:8000", "the URL must start with http:// or https://"),
        ("http://a;colour=red", "unknown option 'colour=red'"),
        ("http://a;weight=0", "weight and max must be >= 1"),
        ("http://a;max=many", "weight and max are integers"),
    ],
)
def test_llama_pool_syntax_errors_name_the_entry(value: str, message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        parse_pool(value)


@pytest.mark.django_db
def test_probe_marks_loading_and_wrong_model_unhealthy_and_routing_skips_them(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    good = inference_server_factory()
    loading = inference_server_factory()
    wrong = inference_server_factory(model="other-model")
    loading.fault("loading")
    llama_pool(good, loading, wrong)
    results = {r.endpoint: r for r in probe_pool()}
    assert (results[good.url].ok, results[good.url].reason) == (True, "ok")
    assert (results[loading.url].ok, results[loading.url].reason) == (
        False,
        "not ready (503 on /health: loading)",
    )
    assert results[wrong.url].ok is False
    assert results[wrong.url].reason == "model 'test-model' is not served here (serves: other-model)"

    async def many() -> set[str]:
        ends = set()
        for _ in range(8):
            async with contextlib.aclosing(stream_chat(ChatRequest(business_id=0, messages=[]))) as events:
                async for event in events:
                    ends.add(getattr(event, "endpoint", ""))
        return ends - {""}

    assert asyncio.run(many()) == {good.url}
    assert (loading.chat_requests, wrong.chat_requests) == (0, 0)

    ready, detail = pool_readiness()
    assert ready is True
    assert detail.startswith("1/3 endpoint(s) ready (")
    assert f"{loading.url}: not ready (503 on /health: loading)" in detail


@pytest.mark.django_db
def test_a_dead_pool_is_not_ready(llama_pool: Callable[..., None], settings: object) -> None:
    llama_pool()
    dead = f"http://127.0.0.1:{free_port()}"
    settings.LLAMA_POOL = dead  # type: ignore[attr-defined]
    ready, detail = pool_readiness()
    assert ready is False
    assert detail.startswith(f"0/1 endpoint(s) ready ({dead}: ConnectError")


@pytest.mark.django_db
def test_lazy_probe_runs_on_use_when_stale(
    inference_server: InferenceServer, llama_pool: Callable[..., None]
) -> None:
    llama_pool(inference_server, LLAMA_PROBE_INTERVAL=30)

    async def once() -> None:
        async with contextlib.aclosing(stream_chat(ChatRequest(business_id=0, messages=[]))) as events:
            async for _ in events:
                pass

    asyncio.run(once())
    assert inference_server.wait_for(lambda: inference_server.requests_by_path.get("/v1/models") == 1, 3)
    asyncio.run(once())  # within the interval: no second probe
    assert inference_server.requests_by_path.get("/health") == 1
    assert pool_status()[0].healthy is True


@pytest.mark.django_db(transaction=True)
def test_status_command_shows_each_endpoint(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    good, broken = inference_server_factory(), inference_server_factory()
    broken.fault("loading")
    llama_pool(good, broken, LLAMA_CIRCUIT_FAILURES=1)
    state.record_failure(broken.url, "HTTP 503: Loading model")
    out = io.StringIO()
    call_command("llama_pool", "status", stdout=out)
    text = out.getvalue()
    assert (
        f"{good.url}  [settings, any, weight 1]\n  health:    healthy\n  in flight: 0/64\n  circuit:   closed\n"
        in text
    )
    assert "  health:    UNHEALTHY - not ready (503 on /health: loading)\n" in text
    assert "(HTTP 503: Loading model)" in text
    assert "  model:     test-model (serves: test-model)" in text


@pytest.mark.django_db(transaction=True)
def test_chat_command_streams_and_reports(pool_server: InferenceServer) -> None:
    shop = BusinessFactory(slug="corner-shop")
    pool_server.script("Hi from the pool.")
    out = io.StringIO()
    call_command("llama_pool", "chat", "--business", "corner-shop", "Hello?", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Hi from the pool."
    assert lines[1].startswith(f"-- endpoint {pool_server.url}, first token ")
    assert lines[1].endswith("tokens 8 prompt + 4 completion, finish stop")
    assert pool_server.requests[-1].body["messages"][-1] == {"role": "user", "content": "Hello?"}
    call = InferenceCall.objects.get(business=shop)  # rows of calls made in other tests may be left
    assert (call.business_id, call.outcome, call.prompt_tokens, call.completion_tokens) == (
        shop.pk,
        "ok",
        8,
        4,
    )
    with pytest.raises(CommandError, match="no business with slug 'nope'"):
        call_command("llama_pool", "chat", "--business", "nope", "Hello?", stdout=io.StringIO())
    assert pool_server.chat_requests == 1


@pytest.mark.django_db(transaction=True)
def test_chat_command_reports_an_unavailable_pool(pool_server: InferenceServer) -> None:
    pool_server.fault("status", status=500)
    # One endpoint: LLAMA_MAX_TRIES (3) tries on it, with a short backoff between them.
    with pytest.raises(CommandError, match=r"^PoolUnavailable: no endpoint answered after 3 tries"):
        call_command("llama_pool", "chat", "Hello?", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_metrics_endpoint_exports_calls_tokens_latency_and_state(
    pool_server: InferenceServer, client: Client, settings: Any
) -> None:
    shop = BusinessFactory()
    pool_server.script("a b c")

    async def once() -> None:
        request = ChatRequest(business_id=shop.pk, messages=[{"role": "user", "content": "x y"}])
        async with contextlib.aclosing(stream_chat(request)) as events:
            async for _ in events:
                pass

    asyncio.run(once())
    settings.METRICS_TOKEN = "scrape-me"
    body = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).content.decode()
    url = pool_server.url
    assert f'bizagent_inference_requests_total{{endpoint="{url}",kind="chat",outcome="ok"}} 1.0' in body
    assert f'bizagent_inference_tokens_total{{endpoint="{url}",type="completion"}} 3.0' in body
    assert f'bizagent_inference_tokens_total{{endpoint="{url}",type="prompt"}} 2.0' in body
    assert f'bizagent_inference_first_token_seconds_count{{endpoint="{url}"}} 1.0' in body
    assert f'bizagent_inference_inflight{{endpoint="{url}"}} 0.0' in body
    assert f'bizagent_inference_circuit_open{{endpoint="{url}"}} 0.0' in body
    assert f'bizagent_inference_endpoint_healthy{{endpoint="{url}"}} -1.0' in body


@pytest.mark.django_db(transaction=True)
def test_admin_rows_join_the_pool(inference_server_factory: Factory, llama_pool: Callable[..., None]) -> None:
    from_settings, from_admin = inference_server_factory(), inference_server_factory()
    llama_pool(from_settings)
    InferenceEndpoint.objects.create(name="gpu2", base_url=from_admin.url + "/", weight=1)
    InferenceEndpoint.objects.create(name="off", base_url="http://127.0.0.1:1", enabled=False)
    reset_endpoint_cache()
    assert [(row.url, row.source) for row in pool_status()] == [
        (from_settings.url, "settings"),
        (from_admin.url, "admin"),
    ]


@pytest.mark.django_db(transaction=True)
def test_embeddings_in_input_order_and_failover(
    inference_server_factory: Factory, llama_pool: Callable[..., None]
) -> None:
    broken, good = inference_server_factory(), inference_server_factory()
    broken.fault("status", status=500)
    llama_pool(broken, good)
    vectors = asyncio.run(embed(["blue mug", "red cup"], model="mini"))
    assert vectors == [embedding_of("blue mug"), embedding_of("red cup")]
    assert good.requests[-1].body == {
        "model": "mini",
        "input": ["blue mug", "red cup"],
        "encoding_format": "float",
    }
    assert embed_sync(["blue mug"]) == [embedding_of("blue mug")]
    assert embed_sync([]) == []
    good.fault("status", status=500)
    with pytest.raises(PoolUnavailable, match="no endpoint returned embeddings after 3 tries"):
        embed_sync(["x"])


@pytest.mark.django_db
def test_metrics_need_the_token_when_one_is_set_and_debug_otherwise(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-me"
    for refused in (
        client.get("/metrics"),
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
    ):
        assert refused.status_code == 401 and b"bizagent_" not in refused.content
    assert b"bizagent_" in client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).content
    settings.METRICS_TOKEN = ""
    settings.DEBUG = False
    refused = client.get("/metrics")  # from loopback too: a proxy on the same host would be loopback
    assert refused.status_code == 403 and b"bizagent_" not in refused.content
    settings.DEBUG = True
    assert client.get("/metrics").status_code == 200
