"""Per-business fairness: at most ``LLAMA_BUSINESS_MAX_CONCURRENCY`` calls of one business in flight, and
at most ``LLAMA_BUSINESS_TOKEN_BUDGET`` tokens per window, so that one tenant cannot starve the others.
``business_id`` 0 (an operator's call) has no caps.
"""

from __future__ import annotations

import asyncio
import time

from django.conf import settings

from inference import slots, state
from inference.types import BudgetExceeded


async def business_enter(business_id: int, *, until: float) -> str | None:
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
        await slots.poll_pause(waited)
        waited += 1
    return lease


def business_leave(business_id: int, lease: str | None) -> None:
    """Give back the slot ``business_enter`` took (None: it took none)."""
    if lease is not None:
        slots.release(state.business_inflight_key(business_id), lease)
