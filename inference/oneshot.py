"""Requests through the pool that answer in one JSON body (embeddings, transcriptions): routed and retried by
the pool's one policy (tries.py), accounted as one ``InferenceCall`` (accounting.py).

A try that fails before its answer (transport error, timeout, 429/5xx, a body of the wrong shape) is retried on
another endpoint first; 400/413/422 mean the request itself is wrong (``RequestRejected``, no retry); when no try
succeeds: ``PoolUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from django.conf import settings

from inference import state
from inference.accounting import Call, record
from inference.endpoints import Endpoint, apool_endpoints
from inference.sse import error_message
from inference.transport import http_client
from inference.tries import REJECTED, Retry, endpoint_tries
from inference.types import InferenceError, PoolUnavailable, RequestRejected

T = TypeVar("T")


async def pool_post(
    *,
    call: Call,
    path: str,
    what: str,
    request: Callable[[Endpoint], dict[str, Any]],
    answer: Callable[[Any, Call], T],
) -> T:
    """POST ``path`` (``/v1/...``) to an endpoint that serves ``call.kind``, trying others on failure.

    ``request(endpoint)``: the httpx keyword arguments of the body (``json=``, or ``files=`` and ``data=``) for
    that endpoint (its model). ``answer(body, call)``: the result from the JSON body (it may fill in the call's
    token counts); ValueError, KeyError or TypeError there is a failed try. ``what`` names the request in errors
    ("embeddings", "a transcription")."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    queue_until = loop.time() + settings.LLAMA_QUEUE_TIMEOUT
    try:
        endpoints = [endpoint for endpoint in await apool_endpoints() if endpoint.serves(call.kind)]
        if not endpoints:
            raise PoolUnavailable(f"no inference endpoint serves {what}")
        reasons: dict[str, str] = {}
        tries = endpoint_tries(endpoints, call, queue_until=queue_until, affinity_key=None, reasons=reasons)
        async with contextlib.aclosing(tries):
            async for current in tries:
                endpoint = current.endpoint
                try:
                    async with asyncio.timeout_at(current.deadline):
                        response = await http_client().post(
                            f"{endpoint.url}{path}", headers=endpoint.headers(), **request(endpoint)
                        )
                    if response.status_code in REJECTED:
                        raise RequestRejected(
                            f"{endpoint.url} rejected {what} (HTTP {response.status_code}): "
                            f"{error_message(_json(response))}",
                            status=response.status_code,
                            endpoint=endpoint.url,
                        )
                    if response.status_code != 200:
                        raise Retry(f"HTTP {response.status_code}: {error_message(_json(response))}")
                    result = answer(response.json(), call)
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
                return result
        detail = "; ".join(f"{url}: {why}" for url, why in reasons.items()) or "deadline passed"
        raise PoolUnavailable(f"no endpoint returned {what} after {call.tries} tries ({detail})")
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
