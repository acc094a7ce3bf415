"""The pool client: the only code in the project that talks to inference servers.

``stream_chat`` routes a chat completion to an endpoint (routing.py), streams it over a shared httpx
connection pool, and yields ``TextDelta`` / ``ToolCalls`` / ``Usage`` / ``StreamEnd`` (types.py).

Waiting: a call first waits for one of its business's slots (``LLAMA_BUSINESS_MAX_CONCURRENCY``), then for
a slot on an endpoint (each endpoint serves ``max`` requests at once; the embedded llama.cpp server one),
both within ``LLAMA_QUEUE_TIMEOUT`` in all. ``LLAMA_REPLY_TIMEOUT`` counts from the first endpoint slot, and
each try's first-token timeout from the moment it got its slot, so time spent queueing is never held against
the server.

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
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from agents.inference import metrics, routing, state
from agents.inference.endpoints import Endpoint, apool_endpoints
from agents.inference.sse import StreamParser, error_message
from agents.inference.types import (
    BudgetExceeded,
    ChatRequest,
    ChatResult,
    InferenceError,
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
from config import aio

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses that say the request is wrong, not the server: another endpoint would answer the same.
_REJECTED = {400, 413, 422}
# Polling for a free slot: starts short (a slot freed by a short call is taken at once) and backs off, with
# jitter so that waiting workers do not poll in step.
_QUEUE_POLL_SECONDS = 0.05
_QUEUE_POLL_MAX_SECONDS = 0.25
# Before trying an endpoint again (every endpoint has been tried): a short pause, doubled each round.
_RETRY_BACKOFF_SECONDS = 0.2
_RETRY_BACKOFF_MAX_SECONDS = 1.0
_DRAIN_SECONDS = 0.5

# --- One httpx client per event loop ---------------------------------------------------------------------
# Connections belong to the loop that opened them (a worker's long-lived reply loop, a test's async_to_sync,
# the ASGI server's), so a client is never shared across loops, and a closed loop's client is never reused.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _http() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    http = _clients.get(loop)
    if http is None or http.is_closed:
        # The client's connections refer to their loop, so a weak key alone never lets go: drop the
        # clients of loops that have closed (their sockets close when collected; close_clients() is cleaner).
        for old in [old for old in list(_clients) if old.is_closed()]:
            _clients.pop(old, None)
        http = httpx.AsyncClient(
            # Read timeouts are ours (first token, idle, deadline); httpx only bounds connect and write.
            timeout=httpx.Timeout(connect=settings.LLAMA_CONNECT_TIMEOUT, read=None, write=10.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30),
            # Inference servers are internal: no proxy from the environment between workers and GPUs.
            trust_env=False,
        )
        _clients[loop] = http
    return http


async def close_clients() -> None:
    """Close this event loop's connections (call before a loop you created ends, e.g. in a task)."""
    http = _clients.pop(asyncio.get_running_loop(), None)
    if http is not None:
        await http.aclose()


# --- Accounting ----------------------------------------------------------------------------------------


@dataclass
class _Call:
    kind: str
    business_id: int | None
    model: str = ""
    endpoint: str = ""
    outcome: str = "unavailable"
    error: str = ""
    tries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_ms: float | None = None
    total_ms: float = 0.0
    panic: bool = False  # at least one try was routed in panic mode (no endpoint was healthy)


def _write_call(call: _Call) -> None:
    from agents.models import InferenceCall

    InferenceCall.objects.create(
        business_id=call.business_id or None,
        kind=call.kind,
        endpoint=call.endpoint,
        model=call.model[:200],
        outcome=call.outcome,
        error=call.error[:2000],
        tries=call.tries,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        first_token_ms=call.first_token_ms,
        total_ms=call.total_ms,
    )


async def _account(call: _Call) -> None:
    """Metrics and the InferenceCall row, after the call (in a short autocommit write of its own)."""
    try:
        metrics.record_call(
            kind=call.kind,
            endpoint=call.endpoint,
            outcome=call.outcome,
            business_id=call.business_id,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            first_token_ms=call.first_token_ms,
            total_ms=call.total_ms,
        )
        if call.business_id and settings.LLAMA_BUSINESS_TOKEN_BUDGET:
            state.add_tokens(call.business_id, call.prompt_tokens + call.completion_tokens)
        # Shielded: a second cancellation of the caller must not lose the record half-written.
        await asyncio.shield(sync_to_async(_write_call, thread_sensitive=True)(call))
    except Exception:  # accounting must never break or hide the reply's own outcome
        logger.exception("could not record an inference call (%s via %s)", call.outcome, call.endpoint)


_accounting: set[asyncio.Task[None]] = set()
_account_in_background: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "account_in_background", default=False
)


@contextlib.contextmanager
def accounting_in_background() -> Iterator[None]:
    """Calls made inside leave their accounting to a task of the running loop, which the caller promises
    outlives them (this module's own loop thread, as a worker's reply loop always does)."""
    token = _account_in_background.set(True)
    try:
        yield
    finally:
        _account_in_background.reset(token)


async def _record(call: _Call) -> None:
    """``_account``, off the caller's path on a long-lived loop (a question's embedding is on the way to the
    first token, a reply's record on the way to its final save); awaited on other loops, which may end
    before a task of theirs would run."""
    if not (aio.on_worker_loop() or _account_in_background.get()):
        await _account(call)
        return
    task = asyncio.get_running_loop().create_task(_account(call))
    _accounting.add(task)
    task.add_done_callback(_accounting.discard)


# --- Per-business fairness ---------------------------------------------------------------------------------


async def _poll_pause(waited: int) -> None:
    """Sleep between two polls for a slot (the ``waited``-th poll)."""
    pause = min(_QUEUE_POLL_MAX_SECONDS, _QUEUE_POLL_SECONDS * 1.5**waited)
    await asyncio.sleep(pause * random.uniform(0.8, 1.2))


async def _business_enter(business_id: int, *, until: float) -> str | None:
    """Take one of the business's concurrency slots after checking its token budget, waiting for one until
    ``until`` (loop time). The budget refuses at once; a full cap refuses only after the wait."""
    if not business_id:
        return None
    budget = settings.LLAMA_BUSINESS_TOKEN_BUDGET
    if budget:
        used = state.tokens_used(business_id)
        if used >= budget:
            window = settings.LLAMA_BUSINESS_BUDGET_WINDOW
            resets = int(window - time.time() % window)
            raise BudgetExceeded(
                f"business {business_id} has used {used} of its {budget} tokens in this {window}-second "
                f"window (LLAMA_BUSINESS_TOKEN_BUDGET); the window resets in {resets} s"
            )
    loop = asyncio.get_running_loop()
    lease = state.new_lease()
    cap = settings.LLAMA_BUSINESS_MAX_CONCURRENCY
    key = state.business_inflight_key(business_id)
    waited = 0
    while state.acquire(key, lease, cap) < 0:
        if loop.time() >= until:
            raise BudgetExceeded(
                f"business {business_id} had {cap} inference requests in flight "
                f"(LLAMA_BUSINESS_MAX_CONCURRENCY) for {settings.LLAMA_QUEUE_TIMEOUT:g} s "
                f"(LLAMA_QUEUE_TIMEOUT); try again when one finishes"
            )
        await _poll_pause(waited)
        waited += 1
    return lease


def _business_leave(business_id: int, lease: str | None) -> None:
    if lease is not None:
        _release(state.business_inflight_key(business_id), lease)


def _release(key: str, lease: str) -> None:
    """Give a slot back. On a worker's reply loop, from a thread: nothing waits for it (a lost release only
    holds the slot until its lease expires), and the loop's other replies are not held for the round trip."""
    if not aio.on_worker_loop():
        state.release(key, lease)
        return
    done = asyncio.get_running_loop().run_in_executor(None, state.release, key, lease)
    done.add_done_callback(_log_release_failure)


def _log_release_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning(
            "could not give an inference slot back (its lease will expire)", exc_info=done.exception()
        )


# --- Health probes on use ------------------------------------------------------------------------------------


_last_probe_check = float("-inf")


def _maybe_probe(endpoints: list[Endpoint]) -> None:
    """Probe the pool in a daemon thread when nobody has for ``LLAMA_PROBE_INTERVAL`` seconds (at the end of
    a call; endpoints with requests in flight are skipped by the probe itself)."""
    global _last_probe_check
    interval = settings.LLAMA_PROBE_INTERVAL
    now = time.monotonic()
    # Checked in-process first: the Redis lock is asked at most once per interval by each process.
    if interval <= 0 or now - _last_probe_check < interval:
        return
    _last_probe_check = now
    if not state.try_lock("probe", interval):
        return
    from agents.inference.health import probe_endpoints

    threading.Thread(target=probe_endpoints, args=(endpoints,), name="llama-probe", daemon=True).start()


# --- Choosing an endpoint ---------------------------------------------------------------------------------


async def _pick(
    endpoints: list[Endpoint],
    *,
    affinity_key: str | None,
    give_up_at: float,
    reasons: dict[str, str],
) -> tuple[Endpoint, state.Pick] | None:
    """An endpoint and the pick that holds one of its slots, or None (``reasons`` says why for each endpoint).

    One Redis round trip per poll: the order comes from the ring or two random draws (routing.py), the loads,
    circuits, health, caps and panic mode are applied atomically in Redis (state.pick). When every candidate
    is at its cap, polls until ``give_up_at``."""
    loop = asyncio.get_running_loop()
    waited = 0
    while True:
        order, mode = routing.candidate_order(endpoints, affinity_key=affinity_key)
        picked = state.pick(
            [(e.url, e.max_concurrency, e.weight) for e in order],
            mode=mode,
            load_factor=settings.LLAMA_AFFINITY_LOAD_FACTOR,
        )
        if picked.chosen is not None:
            if picked.panic:
                logger.warning(
                    "no healthy inference endpoint: panic mode, trying %s anyway (%s)",
                    picked.chosen,
                    ", ".join(f"{url}: {status}" for url, status in picked.statuses.items()),
                )
            return next(e for e in order if e.url == picked.chosen), picked
        full = "full" in picked.statuses.values()
        if not full or loop.time() >= give_up_at:
            # The failure path only: read why each endpoint was passed over.
            states = state.read_states([e.url for e in order])
            by_url = {e.url: e for e in order}
            for url, status in picked.statuses.items():
                if status == "unhealthy":
                    reasons[url] = f"unhealthy: {states[url].health_reason}"
                elif status in ("open", "trial"):
                    reasons[url] = f"circuit open: {states[url].circuit_reason}"
                elif status == "full":
                    reasons[url] = (
                        f"at its cap of {by_url[url].max_concurrency} requests in flight "
                        f"for {settings.LLAMA_QUEUE_TIMEOUT:g} s (LLAMA_QUEUE_TIMEOUT)"
                    )
            return None
        await _poll_pause(waited)
        waited += 1


class _Retry(Exception):
    """A failure before the first token: try again (another endpoint first)."""


@dataclass
class _Try:
    endpoint: Endpoint
    # Its circuit was clean (closed, no failure counted, not marked unhealthy) when it was picked: a success
    # then has nothing to reset, and no round trip to make.
    clean: bool
    # The call's deadline (loop time): LLAMA_REPLY_TIMEOUT from the first endpoint slot the call got.
    deadline: float


async def _tries(
    endpoints: list[Endpoint],
    call: _Call,
    *,
    queue_until: float,
    affinity_key: str | None,
    reasons: dict[str, str],
) -> AsyncGenerator[_Try, None]:
    """The endpoints to try in turn, each holding a slot (its lease) until the caller moves on: up to
    ``LLAMA_MAX_TRIES``. Endpoints not tried yet come first; once every one has been tried, any may be tried
    again after a short backoff (a pool of one endpoint retries on it). The first slot is waited for until
    ``queue_until``; the deadline (``LLAMA_REPLY_TIMEOUT``) starts when it is obtained, and later tries wait
    for a slot at most ``LLAMA_QUEUE_TIMEOUT`` each, within that deadline. Use with ``contextlib.aclosing``:
    the last lease is released when the caller leaves."""
    loop = asyncio.get_running_loop()
    tried: set[str] = set()
    deadline: float | None = None
    rounds = 0
    while call.tries < settings.LLAMA_MAX_TRIES and (deadline is None or loop.time() < deadline):
        candidates = [endpoint for endpoint in endpoints if endpoint.url not in tried]
        if not candidates:
            # Every endpoint has failed once in this call: pause before trying them again.
            rounds += 1
            pause = min(_RETRY_BACKOFF_MAX_SECONDS, _RETRY_BACKOFF_SECONDS * 2 ** (rounds - 1))
            if deadline is not None and loop.time() + pause >= deadline:
                return
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            tried.clear()
            candidates = list(endpoints)
        give_up_at = (
            queue_until if deadline is None else min(deadline, loop.time() + settings.LLAMA_QUEUE_TIMEOUT)
        )
        picked = await _pick(candidates, affinity_key=affinity_key, give_up_at=give_up_at, reasons=reasons)
        if picked is None:
            return
        endpoint, slot = picked
        if deadline is None:
            deadline = loop.time() + settings.LLAMA_REPLY_TIMEOUT
        tried.add(endpoint.url)
        call.tries += 1
        call.endpoint = endpoint.url
        if slot.panic:
            call.panic = True
        try:
            yield _Try(endpoint, slot.clean, deadline)
        finally:
            _release(state.inflight_key(endpoint.url), slot.lease)


# --- Streaming chat -------------------------------------------------------------------------------------------


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
    endpoint: Endpoint, request: ChatRequest, call: _Call, started: float, deadline: float
) -> AsyncGenerator[StreamEvent, None]:
    """One try on one endpoint. Raises _Retry until text was yielded (an empty completion included),
    StreamCut after it. ``deadline`` is the call's; the first-token timeout counts from now (the slot is
    held), not from when the call started waiting."""
    loop = asyncio.get_running_loop()
    model = request.model or endpoint.model or settings.LLAMA_MODEL
    call.model = model
    call.first_token_ms = None
    first_deadline = min(deadline, loop.time() + settings.LLAMA_FIRST_TOKEN_TIMEOUT)
    http = _http()
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
        raise _Retry(f"no response within {settings.LLAMA_FIRST_TOKEN_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    try:
        if response.status_code != 200:
            message = await _error_text(response, first_deadline)
            if response.status_code in _REJECTED:
                raise RequestRejected(
                    f"{endpoint.url} rejected the request (HTTP {response.status_code}): {message}",
                    status=response.status_code,
                    endpoint=endpoint.url,
                )
            raise _Retry(f"HTTP {response.status_code}: {message}")
        parser = StreamParser()
        parts: list[str] = []  # the text yielded to the caller
        # Whitespace before the first visible character is held back: a stream of only whitespace is an
        # empty completion, and until the caller has been shown something, a failure can still be retried.
        held: list[str] = []
        chunks = response.aiter_bytes()
        idle = settings.LLAMA_IDLE_TIMEOUT

        def cut(reason: str) -> StreamCut | _Retry:
            return (
                StreamCut(reason, partial_text="".join(parts), endpoint=endpoint.url)
                if parts
                else _Retry(reason)
            )

        while True:
            # The timer covers only the wait for the server, never the caller's work between our yields.
            limit = min(deadline, loop.time() + idle) if parser.started else first_deadline
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                if not parser.started:
                    raise _Retry(f"no first token within {settings.LLAMA_FIRST_TOKEN_TIMEOUT:g} s") from None
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
        raise _Retry(
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
    call = _Call(kind="chat", business_id=request.business_id or None)
    try:
        business_lease = await _business_enter(request.business_id, until=queue_until)
    except BudgetExceeded:
        # Counted in the metrics only: nothing was sent, so there is no call to record.
        metrics.record_call(
            kind="chat",
            endpoint="",
            outcome="refused",
            business_id=call.business_id,
            prompt_tokens=0,
            completion_tokens=0,
            first_token_ms=None,
            total_ms=None,
        )
        raise
    endpoints: list[Endpoint] = []
    try:
        endpoints = [endpoint for endpoint in await apool_endpoints() if endpoint.serves("chat")]
        if not endpoints:
            raise PoolUnavailable(
                "no inference endpoint configured (LLAMA_POOL is empty, the embedded llama.cpp server is "
                "not running and the admin lists none)"
            )
        reasons: dict[str, str] = {}
        tries = _tries(
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
                except _Retry as exc:
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
        call.outcome = {
            StreamCut: "cut",
            RequestRejected: "rejected",
            PoolUnavailable: "unavailable",
        }.get(type(exc), "cancelled")
        call.error = str(exc)
        raise
    finally:
        _business_leave(request.business_id, business_lease)
        # After the call, not before: its own slot is given back, so the endpoint it used may be idle and
        # worth probing (busy endpoints are not probed: health.py).
        if endpoints:
            _maybe_probe(endpoints)
        call.total_ms = (time.perf_counter() - started) * 1000
        await _record(call)


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


# --- Embeddings ------------------------------------------------------------------------------------------------


async def embed(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    """Vectors for ``texts`` from an endpoint serving embeddings, in input order."""
    if not texts:
        return []
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    queue_until = loop.time() + settings.LLAMA_QUEUE_TIMEOUT
    model = model or settings.EMBEDDINGS_MODEL
    call = _Call(kind="embeddings", business_id=None, model=model)
    try:
        endpoints = [endpoint for endpoint in await apool_endpoints() if endpoint.serves("embeddings")]
        if not endpoints:
            raise PoolUnavailable("no inference endpoint serves embeddings")
        reasons: dict[str, str] = {}
        tries = _tries(endpoints, call, queue_until=queue_until, affinity_key=None, reasons=reasons)
        async with contextlib.aclosing(tries):
            async for current in tries:
                endpoint = current.endpoint
                try:
                    async with asyncio.timeout_at(current.deadline):
                        response = await _http().post(
                            f"{endpoint.url}/v1/embeddings",
                            json={"model": model, "input": texts, "encoding_format": "float"},
                            headers=endpoint.headers(),
                        )
                    if response.status_code in _REJECTED:
                        raise RequestRejected(
                            f"{endpoint.url} rejected the embeddings request (HTTP {response.status_code}): "
                            f"{error_message(_json(response))}",
                            status=response.status_code,
                            endpoint=endpoint.url,
                        )
                    if response.status_code != 200:
                        raise _Retry(f"HTTP {response.status_code}: {error_message(_json(response))}")
                    body = response.json()
                    rows = sorted(body["data"], key=lambda row: row["index"])
                    vectors = [[float(x) for x in row["embedding"]] for row in rows]
                    if len(vectors) != len(texts):
                        raise _Retry(f"{len(vectors)} embeddings for {len(texts)} inputs")
                    call.prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
                except (TimeoutError, httpx.HTTPError, ValueError, KeyError, TypeError, _Retry) as exc:
                    reason = (
                        str(exc) if isinstance(exc, _Retry) else f"{type(exc).__name__}: {exc}".rstrip(": ")
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
        await _record(call)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


# --- Sync callers -----------------------------------------------------------------------------------------
# One event loop in a daemon thread per process, so that sync callers (catalog imports) reuse connections
# instead of opening a loop and a client per call. Recreated after a fork (Celery prefork children).

_runner_lock = threading.Lock()
_runner: tuple[int, asyncio.AbstractEventLoop] | None = None


def _runner_loop() -> asyncio.AbstractEventLoop:
    import os

    global _runner
    with _runner_lock:
        if _runner is None or _runner[0] != os.getpid() or _runner[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="llama-sync", daemon=True).start()
            _runner = (os.getpid(), loop)
        return _runner[1]


def run_in_background(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start a coroutine of this module on the client's own loop thread and return at once: its blocking
    Redis round trips (routing, metrics) then hold that thread, never the caller's event loop."""
    return asyncio.run_coroutine_threadsafe(coroutine, _runner_loop())


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of this module from sync code (not from inside a running event loop's thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, _runner_loop()).result()


def embed_sync(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    return run_sync(embed(texts, model=model))
