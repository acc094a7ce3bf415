"""Chat completions through the pool: ``stream_chat`` and ``complete_chat``.

``stream_chat`` routes a chat completion to an endpoint (tries.py, routing.py), streams it over the loop's
shared httpx client (transport.py), and yields ``TextDelta`` / ``ToolCalls`` / ``Usage`` / ``StreamEnd``
(types.py).

Waiting: a call first waits for one of its business's slots (``LLAMA_BUSINESS_MAX_CONCURRENCY``,
fairness.py), then for a slot on an endpoint (each endpoint serves ``max`` requests at once; the embedded
llama.cpp server one), both within ``LLAMA_QUEUE_TIMEOUT`` in all. ``LLAMA_REPLY_TIMEOUT`` counts from the
first endpoint slot, and each try's first-token timeout from the moment it got its slot, so time spent
queueing is never held against the server.

Failure semantics (the one retry policy of a chat completion):
- before the first token (connect error, timeout, HTTP 429/5xx/401/404, in-band error, a stream that ends
  early, a stream that ends with no text and no tool call: ``empty_completion``), the request is retried, up
  to ``LLAMA_MAX_TRIES`` tries and within ``LLAMA_REPLY_TIMEOUT``: first on endpoints not tried yet, then,
  once every endpoint has been tried, on any of them again after a short backoff; when no try succeeds:
  ``PoolUnavailable``;
- after the first token nothing is retried (the caller has shown the text): ``StreamCut``;
- HTTP 400/413/422 mean the request itself is wrong: ``RequestRejected``, no retry, no circuit failure.
- When no endpoint is healthy (every one marked unhealthy by a probe or its circuit open) the pool still
  tries them ("panic", state.pick), rather than failing without a try.

Close the stream when you stop early, so that the upstream request is closed at once::

    async with contextlib.aclosing(stream_chat(request)) as events:
        async for event in events: ...

(``async for ... break`` alone leaves the generator to the garbage collector.) Cancelling the task that
iterates closes the upstream connection too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from django.conf import settings

from inference import state
from inference.accounting import Call, record, record_refusal
from inference.endpoints import Endpoint, apool_endpoints
from inference.fairness import business_enter, business_leave
from inference.health import maybe_probe
from inference.sse import StreamParser, error_message
from inference.transport import http_client
from inference.tries import REJECTED, Retry, endpoint_tries
from inference.types import (
    BudgetExceeded,
    CallOutcome,
    ChatRequest,
    ChatResult,
    PoolUnavailable,
    RequestRejected,
    StreamCut,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    Usage,
)

logger = logging.getLogger(__name__)

_DRAIN_SECONDS = 0.5


def _body(request: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": request.max_tokens,
        # Explicit: vLLM applies the model's generation_config and llama.cpp its own defaults otherwise.
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.tools:
        body["tools"] = request.tools
    if request.stop:
        body["stop"] = request.stop
    return body


def _headers(endpoint: Endpoint, affinity_key: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", **endpoint.headers()}
    if affinity_key:
        # A stable session id lets routers in front of a server (vLLM router, llm-d, Envoy) keep affinity too.
        headers["X-Session-Id"] = affinity_key
        headers["x-session-affinity"] = affinity_key
    return headers


async def _error_text(response: httpx.Response, until: float) -> str:
    try:
        async with asyncio.timeout_at(until):
            raw = await response.aread()
        return error_message(json.loads(raw))
    except (ValueError, TimeoutError, httpx.HTTPError):
        return response.reason_phrase or "no body"


async def _attempt(
    endpoint: Endpoint, request: ChatRequest, call: Call, started: float, deadline: float
) -> AsyncGenerator[StreamEvent, None]:
    """One try on one endpoint. Raises Retry until text was yielded (an empty completion included),
    StreamCut after it. ``deadline`` is the call's; the first-token timeout counts from now (the slot is
    held), not from when the call started waiting."""
    loop = asyncio.get_running_loop()
    model = request.model or endpoint.model or settings.LLAMA_MODEL
    call.model = model
    call.first_token_ms = None
    first_deadline = min(deadline, loop.time() + settings.LLAMA_FIRST_TOKEN_TIMEOUT)
    http = http_client()
    outgoing = http.build_request(
        "POST",
        f"{endpoint.url}/v1/chat/completions",
        json=_body(request, model),
        headers=_headers(endpoint, request.affinity_key),
    )
    try:
        async with asyncio.timeout_at(first_deadline):
            response = await http.send(outgoing, stream=True)
    except TimeoutError:
        raise Retry(f"no response within {settings.LLAMA_FIRST_TOKEN_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise Retry(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    try:
        if response.status_code != 200:
            message = await _error_text(response, first_deadline)
            if response.status_code in REJECTED:
                raise RequestRejected(
                    f"{endpoint.url} rejected the request (HTTP {response.status_code}): {message}",
                    status=response.status_code,
                    endpoint=endpoint.url,
                )
            raise Retry(f"HTTP {response.status_code}: {message}")
        parser = StreamParser()
        parts: list[str] = []  # the text yielded to the caller
        # Whitespace before the first visible character is held back: a stream of only whitespace is an
        # empty completion, and until the caller has been shown something, a failure can still be retried.
        held: list[str] = []
        chunks = response.aiter_bytes()
        idle = settings.LLAMA_IDLE_TIMEOUT

        def cut(reason: str) -> StreamCut | Retry:
            return (
                StreamCut(reason, partial_text="".join(parts), endpoint=endpoint.url)
                if parts
                else Retry(reason)
            )

        while True:
            # The timer covers only the wait for the server, never the caller's work between our yields.
            limit = min(deadline, loop.time() + idle) if parser.started else first_deadline
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                if not parser.started:
                    raise Retry(f"no first token within {settings.LLAMA_FIRST_TOKEN_TIMEOUT:g} s") from None
                if limit >= deadline:
                    raise cut(
                        f"reply not finished within LLAMA_REPLY_TIMEOUT ({settings.LLAMA_REPLY_TIMEOUT:g} s)"
                    ) from None
                raise cut(f"no token for {idle:g} s (LLAMA_IDLE_TIMEOUT)") from None
            except httpx.HTTPError as exc:
                raise cut(f"connection lost: {type(exc).__name__}: {exc}".rstrip(": ")) from None
            texts = parser.feed(chunk) if chunk is not None else parser.finish()
            if parser.started and call.first_token_ms is None:
                call.first_token_ms = (time.perf_counter() - started) * 1000
            for text in texts:
                if not parts and not text.strip():
                    held.append(text)
                    continue
                for piece in (*held, text):
                    parts.append(piece)
                    yield TextDelta(piece)
                held.clear()
            if parser.error is not None:
                raise cut(f"in-band error: {parser.error}")
            if parser.done:
                if chunk is not None:
                    # Read the end of the body (it follows [DONE] at once): a response closed unread
                    # takes its connection down with it, and the next request would pay a new connect.
                    with contextlib.suppress(TimeoutError, httpx.HTTPError):
                        async with asyncio.timeout(_DRAIN_SECONDS):
                            async for _ in chunks:
                                pass
                break
            if chunk is None:
                raise cut("the connection closed before [DONE]")
    finally:
        await response.aclose()
    call.endpoint = endpoint.url
    calls = parser.tool_calls()
    if not parts and not calls:
        # llama-cpp-python's server ends a stream it interrupted (another request arrived, with its
        # interrupt_requests on) with the role chunk and [DONE]: nothing to show, so a failed try.
        raise Retry(
            f"empty_completion: the stream ended with no text and no tool call "
            f"(finish_reason {parser.finish_reason or 'none'}, {len(''.join(held))} whitespace characters)"
        )
    for piece in held:
        parts.append(piece)
        yield TextDelta(piece)
    if calls:
        yield ToolCalls(calls)
    if parser.prompt_tokens is not None:
        call.prompt_tokens = parser.prompt_tokens
        call.completion_tokens = parser.completion_tokens or 0
        yield Usage(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens)
    call.total_ms = (time.perf_counter() - started) * 1000
    yield StreamEnd(
        finish_reason=parser.finish_reason or "unknown",
        endpoint=endpoint.url,
        first_token_ms=call.first_token_ms,
        total_ms=call.total_ms,
    )


async def stream_chat(request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
    """Stream one chat completion through the pool (see the module docstring for failure semantics)."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    # One queueing budget for the business slot and the first endpoint slot together.
    queue_until = loop.time() + settings.LLAMA_QUEUE_TIMEOUT
    call = Call(kind="chat", business_id=request.business_id or None)
    try:
        business_lease = await business_enter(request.business_id, until=queue_until)
    except BudgetExceeded:
        record_refusal()
        raise
    endpoints: list[Endpoint] = []
    try:
        endpoints = [
            endpoint for endpoint in await apool_endpoints() if endpoint.serves("chat", images=request.images)
        ]
        if not endpoints:
            raise PoolUnavailable(
                "no inference endpoint accepts images (LLAMA_POOL's images=yes, or the admin's flag)"
                if request.images
                else "no inference endpoint configured (LLAMA_POOL is empty, the embedded llama.cpp server "
                "is not running and the admin lists none)"
            )
        reasons: dict[str, str] = {}
        tries = endpoint_tries(
            endpoints, call, queue_until=queue_until, affinity_key=request.affinity_key, reasons=reasons
        )
        async with contextlib.aclosing(tries):
            async for current in tries:
                endpoint = current.endpoint
                try:
                    async with contextlib.aclosing(
                        _attempt(endpoint, request, call, started, current.deadline)
                    ) as events:
                        async for event in events:
                            yield event
                except Retry as exc:
                    reasons[endpoint.url] = str(exc)
                    if state.record_failure(endpoint.url, str(exc)):
                        logger.warning("circuit opened for %s: %s", endpoint.url, exc)
                    continue
                except StreamCut as exc:
                    state.record_failure(endpoint.url, exc.reason)
                    raise
                if not current.clean:
                    state.record_success(endpoint.url)
                call.outcome = "ok"
                return
        detail = "; ".join(f"{url}: {why}" for url, why in reasons.items()) or "deadline passed"
        raise PoolUnavailable(f"no endpoint answered after {call.tries} tries ({detail})")
    except BaseException as exc:
        outcomes: dict[type[BaseException], CallOutcome] = {
            StreamCut: "cut",
            RequestRejected: "rejected",
            PoolUnavailable: "unavailable",
        }
        call.outcome = outcomes.get(type(exc), "cancelled")
        call.error = str(exc)
        raise
    finally:
        business_leave(request.business_id, business_lease)
        # After the call, not before: its own slot is given back, so the endpoint it used may be idle and
        # worth probing (busy endpoints are not probed: health.py).
        if endpoints:
            maybe_probe(endpoints)
        call.total_ms = (time.perf_counter() - started) * 1000
        await record(call)


async def complete_chat(request: ChatRequest) -> ChatResult:
    """A whole reply. Streams under the hood (same routing and timeouts); as nothing was shown yet, a reply
    cut mid-way is retried once from the start."""
    for attempt in range(2):
        parts: list[str] = []
        calls: tuple[ToolCall, ...] = ()
        usage = Usage(0, 0)
        try:
            async with contextlib.aclosing(stream_chat(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif isinstance(event, ToolCalls):
                        calls = event.calls
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, StreamEnd):
                        return ChatResult(
                            text="".join(parts),
                            finish_reason=event.finish_reason,
                            endpoint=event.endpoint,
                            prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            first_token_ms=event.first_token_ms,
                            total_ms=event.total_ms,
                            tool_calls=calls,
                        )
        except StreamCut:
            if attempt == 1:
                raise
    raise PoolUnavailable("the stream ended without a result")  # pragma: no cover - StreamEnd always ends it
