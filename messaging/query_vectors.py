"""A widget question's embedding, started by the chat socket while its reply is queued (pool embeddings).

With ``EMBEDDINGS_BACKEND=pool``, a reply's retrieval cannot search before the question's vector comes back
from the inference pool. The chat socket knows the question first: once the message is stored and its reply
queued, it asks the pool for the vector (``hand_over_soon``), so that the call runs during the Celery hop and
the claim instead of after them, and leaves the vector in Redis under a random token that travels with the
task (``query_vector_token``). The reply task takes it (``take``, waiting at most ``WAIT_SECONDS``) or, when
nothing usable comes (the pool failed this call, the socket's process died), embeds the question itself:
the handover can save time, never cost a reply. Reading does not consume the vector, so a retried task finds
it too; it expires after ``TTL_SECONDS``.

The token is 128 random bits known only to the server, and the vector is that of the customer's own
message: nothing crosses from one conversation or business to another.
"""

from __future__ import annotations

import concurrent.futures
import logging
import uuid
from array import array
from typing import cast

from django.conf import settings

from agents.retrieval import embed_query, prefetch_query
from common import aio
from common.redis import async_client

logger = logging.getLogger(__name__)

WAIT_SECONDS = 1  # the embedding takes milliseconds: this only bounds a handover that never comes
TTL_SECONDS = 60
_pending: set[concurrent.futures.Future[None]] = set()


def _key(token: str) -> str:
    return f"query-vector:{token}"


def new_token() -> str | None:
    """A token for the reply task of a message about to be stored, or None when there is nothing to hand
    over (the local embedding model runs inside the search itself)."""
    return uuid.uuid4().hex if settings.EMBEDDINGS_BACKEND == "pool" else None


def hand_over_soon(token: str, question: str) -> None:
    """Embed ``question`` as the reply's prefetch will query it, on the process's background loop (``common.aio``): the
    caller goes on at once, and the pool's routing round trips never hold the chat socket's event loop."""
    future = aio.submit(hand_over(token, question))
    _pending.add(future)
    future.add_done_callback(_pending.discard)


async def hand_over(token: str, question: str) -> None:
    try:
        vector = await embed_query(prefetch_query(question))
        payload = array("f", vector).tobytes()
    except Exception as exc:
        # The reply task embeds the question itself (its own tries, its own error): tell it at once.
        logger.warning("query vector %s not handed over: %s", token, exc)
        payload = b""
    try:
        async with async_client().pipeline(transaction=False) as pipe:
            pipe.rpush(_key(token), payload)
            pipe.expire(_key(token), TTL_SECONDS)
            await pipe.execute()
    except Exception:
        logger.warning("query vector %s not handed over (Redis)", token, exc_info=True)


async def take(token: str) -> list[float] | None:
    """The handed-over vector, or None (nothing came within ``WAIT_SECONDS``, or the embedding failed)."""
    # BLMOVE from the list to itself: waits for the vector and leaves it there for a retried task.
    raw = await async_client().blmove(_key(token), _key(token), WAIT_SECONDS, "LEFT", "LEFT")
    if not raw:
        return None
    vector = array("f")
    vector.frombytes(cast(bytes, raw))  # the client does not decode replies
    return vector.tolist()
