"""Waiting for a slot and giving it back: the two halves of a lease that a business's or an endpoint's
in-flight cap hands out (the leases themselves are taken atomically in Redis: state.py).
"""

from __future__ import annotations

import asyncio
import logging
import random

from common import aio
from inference import state

logger = logging.getLogger(__name__)

# Polling for a free slot: starts short (a slot freed by a short call is taken at once) and backs off, with
# jitter so that waiting workers do not poll in step.
_QUEUE_POLL_SECONDS = 0.05
_QUEUE_POLL_MAX_SECONDS = 0.25


async def poll_pause(waited: int) -> None:
    """Sleep between two polls for a slot (the ``waited``-th poll)."""
    pause = min(_QUEUE_POLL_MAX_SECONDS, _QUEUE_POLL_SECONDS * 1.5**waited)
    await asyncio.sleep(pause * random.uniform(0.8, 1.2))


def release(key: str, lease: str) -> None:
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
