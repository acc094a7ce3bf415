"""Choosing endpoints and trying them in turn: the pool's one retry policy, shared by chat and embeddings.

Each try holds a slot on its endpoint (a lease in Redis) until the caller moves on. A failure before anything
was shown (``Retry``) is tried again, up to ``LLAMA_MAX_TRIES`` tries and within ``LLAMA_REPLY_TIMEOUT``:
first on endpoints not tried yet, then, once every endpoint has been tried, on any of them again after a
short backoff. When no endpoint is healthy (every one marked unhealthy by a probe or its circuit open) the
pool still tries them ("panic", state.pick), rather than failing without a try.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from django.conf import settings

from inference import routing, slots, state
from inference.accounting import Call
from inference.endpoints import Endpoint

logger = logging.getLogger(__name__)

# Statuses that say the request is wrong, not the server: another endpoint would answer the same.
REJECTED = {400, 413, 422}
# Before trying an endpoint again (every endpoint has been tried): a short pause, doubled each round.
_RETRY_BACKOFF_SECONDS = 0.2
_RETRY_BACKOFF_MAX_SECONDS = 1.0


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
        await slots.poll_pause(waited)
        waited += 1


class Retry(Exception):
    """A failure before the first token: try again (another endpoint first)."""


@dataclass
class Try:
    """One endpoint to try, one of its slots held until the caller moves on."""

    endpoint: Endpoint
    # Its circuit was clean (closed, no failure counted, not marked unhealthy) when it was picked: a success
    # then has nothing to reset, and no round trip to make.
    clean: bool
    # The call's deadline (loop time): LLAMA_REPLY_TIMEOUT from the first endpoint slot the call got.
    deadline: float


async def endpoint_tries(
    endpoints: list[Endpoint],
    call: Call,
    *,
    queue_until: float,
    affinity_key: str | None,
    reasons: dict[str, str],
) -> AsyncGenerator[Try, None]:
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
            yield Try(endpoint, slot.clean, deadline)
        finally:
            slots.release(state.inflight_key(endpoint.url), slot.lease)
