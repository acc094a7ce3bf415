"""Accounting of pool calls: what one call did (``Call``), recorded after it ends as metrics, the business's
token use and an ``InferenceCall`` row.

The row is written in a short autocommit write of its own, never inside a transaction held across the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from common import aio, tracing
from inference import metrics, state
from inference.types import CallOutcome

logger = logging.getLogger(__name__)


@dataclass
class Call:
    """One pool call, filled in as it goes (by its tries and by the call itself) and recorded at its end."""

    kind: str
    business_id: int | None
    model: str = ""
    endpoint: str = ""
    outcome: CallOutcome = "unavailable"
    error: str = ""
    tries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_ms: float | None = None
    total_ms: float = 0.0
    panic: bool = False  # at least one try was routed in panic mode (no endpoint was healthy)


def _write_call(call: Call) -> None:
    from inference.models import InferenceCall

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


async def _account(call: Call) -> None:
    """Metrics, its span and the InferenceCall row, after the call (in a short autocommit write of its own)."""
    ended_ns = time.time_ns()
    tracing.record(
        f"pool {call.kind}",
        started_ns=ended_ns - int(call.total_ms * 1e6),
        ended_ns=ended_ns,
        endpoint=call.endpoint,
        outcome=call.outcome,
        tries=call.tries,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        first_token_ms=call.first_token_ms or 0.0,
    )
    try:
        metrics.record_call(
            kind=call.kind,
            endpoint=call.endpoint,
            outcome=call.outcome,
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


async def record(call: Call) -> None:
    """``_account``, off the caller's path on a long-lived loop (a question's embedding is on the way to the
    first token, a reply's record on the way to its final save); awaited on other loops, which may end
    before a task of theirs would run."""
    if not aio.on_worker_loop():
        await _account(call)
        return
    task = asyncio.get_running_loop().create_task(_account(call))
    _accounting.add(task)
    task.add_done_callback(_accounting.discard)


def record_refusal() -> None:
    """Count a chat call that its business's cap or budget refused: in the metrics only, as nothing was
    sent and there is no call to record."""
    metrics.record_call(
        kind="chat",
        endpoint="",
        outcome="refused",
        prompt_tokens=0,
        completion_tokens=0,
        first_token_ms=None,
        total_ms=None,
    )
