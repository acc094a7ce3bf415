"""Embeddings through the pool: ``embed`` calls ``/v1/embeddings`` on endpoints whose kind allows it, with
the pool's routing and retry policy (tries.py); ``embed_sync`` does the same from sync code, on the pool's
process's background loop (``common.aio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from django.conf import settings

from common import aio
from inference import state
from inference.accounting import Call, record
from inference.endpoints import apool_endpoints
from inference.sse import error_message
from inference.transport import http_client
from inference.tries import REJECTED, Retry, endpoint_tries
from inference.types import InferenceError, PoolUnavailable, RequestRejected


async def embed(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    """Vectors for ``texts`` from an endpoint serving embeddings, in input order."""
    if not texts:
        return []
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    queue_until = loop.time() + settings.LLAMA_QUEUE_TIMEOUT
    model = model or settings.EMBEDDINGS_MODEL
    call = Call(kind="embeddings", business_id=None, model=model)
    try:
        endpoints = [endpoint for endpoint in await apool_endpoints() if endpoint.serves("embeddings")]
        if not endpoints:
            raise PoolUnavailable("no inference endpoint serves embeddings")
        reasons: dict[str, str] = {}
        tries = endpoint_tries(endpoints, call, queue_until=queue_until, affinity_key=None, reasons=reasons)
        async with contextlib.aclosing(tries):
            async for current in tries:
                endpoint = current.endpoint
                try:
                    async with asyncio.timeout_at(current.deadline):
                        response = await http_client().post(
                            f"{endpoint.url}/v1/embeddings",
                            json={"model": model, "input": texts, "encoding_format": "float"},
                            headers=endpoint.headers(),
                        )
                    if response.status_code in REJECTED:
                        raise RequestRejected(
                            f"{endpoint.url} rejected the embeddings request (HTTP {response.status_code}): "
                            f"{error_message(_json(response))}",
                            status=response.status_code,
                            endpoint=endpoint.url,
                        )
                    if response.status_code != 200:
                        raise Retry(f"HTTP {response.status_code}: {error_message(_json(response))}")
                    body = response.json()
                    rows = sorted(body["data"], key=lambda row: row["index"])
                    vectors = [[float(x) for x in row["embedding"]] for row in rows]
                    if len(vectors) != len(texts):
                        raise Retry(f"{len(vectors)} embeddings for {len(texts)} inputs")
                    call.prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
                except (TimeoutError, httpx.HTTPError, ValueError, KeyError, TypeError, Retry) as exc:
                    reason = (
                        str(exc) if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}".rstrip(": ")
                    )
                    reasons[endpoint.url] = reason
                    state.record_failure(endpoint.url, reason)
                    continue
                if not current.clean:
                    state.record_success(endpoint.url)
                call.outcome = "ok"
                return vectors
        detail = "; ".join(f"{url}: {why}" for url, why in reasons.items()) or "deadline passed"
        raise PoolUnavailable(f"no endpoint returned embeddings after {call.tries} tries ({detail})")
    except BaseException as exc:
        if call.outcome != "ok":
            call.outcome = (
                "rejected"
                if isinstance(exc, RequestRejected)
                else ("unavailable" if isinstance(exc, InferenceError) else "cancelled")
            )
            call.error = str(exc)
        raise
    finally:
        call.total_ms = (time.perf_counter() - started) * 1000
        await record(call)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


def embed_sync(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    """``embed`` for sync callers (not from inside a running event loop's thread)."""
    return aio.run(embed(texts, model=model))
