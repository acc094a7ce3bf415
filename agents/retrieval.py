"""Retrieval for an answer: the business's catalog rows (items and document chunks) for a question.

``retrieve`` runs the hybrid search (``catalogs.search``) with the query's embedding on its way meanwhile;
``Prefetch`` starts one before the conversation is read, so that it runs while the reply is claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from agents.prompts import retrieval_query
from businesses.models import Business
from catalogs.search import PreparedSearch, prepare_search, run_search
from common import aio

SEARCH_LIMIT = 6


def _prepare_search(business: Business | int, query: str) -> PreparedSearch | None:
    if isinstance(business, int):
        # The search reads only the business's id: no query to load the row (a prefetch knows just the id).
        business = Business(pk=business)
    # "Is the X in stock?" must find the X to say that it is not: stock words are a preference here.
    return prepare_search(business, query, limit=SEARCH_LIMIT, stock_words="prefer")


HandedVector = Callable[[], Awaitable[list[float] | None]]


async def retrieve(
    business: Business | int, query: str, handed_vector: HandedVector | None = None
) -> list[Any]:
    """The business's catalog rows (items and document chunks) for ``query``, best first.

    The search's word statistics are read while the query's embedding is on its way (they do not need it):
    the vector's wait and the statistics' round trips overlap. ``handed_vector``: the query's vector from
    an embedding started earlier (None when none came: the query is embedded here)."""
    vector = asyncio.ensure_future(_query_vector(query.strip(), handed_vector))
    # Not awaited when the statistics fail or nothing can match: its outcome then is nobody's business.
    vector.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        prepared = await aio.database(_prepare_search, business, query)
        if prepared is None:
            return []
        return await aio.database(run_search, prepared, await vector)
    finally:
        if not vector.done():
            vector.cancel()


@dataclass(frozen=True)
class Prefetch:
    """A retrieval started before the conversation was read (from the customer's message alone), so that it
    runs while the reply is claimed; ``agents.respond`` uses it when the query turns out the same."""

    query: str
    hits: asyncio.Task[list[Any]]

    @classmethod
    def start(cls, business_id: int, question: str, handed_vector: HandedVector | None = None) -> Prefetch:
        query = prefetch_query(question)
        task = asyncio.create_task(retrieve(business_id, query, handed_vector))
        # Unused (a refusal, a follow-up read with the turns, a burst): its outcome is nobody's business.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return cls(query, task)

    def cancel(self) -> None:
        self.hits.cancel()


def prefetch_query(question: str) -> str:
    """The retrieval query of a question read without its conversation (a prefetch's)."""
    return retrieval_query(question, [])


async def _query_vector(query: str, handed_vector: HandedVector | None = None) -> list[float] | None:
    if settings.EMBEDDINGS_BACKEND != "pool":
        return None  # the local model runs inside run_search(), in the database thread
    if handed_vector is not None:
        vector = await handed_vector()
        if vector is not None:
            return vector
    return await embed_query(query)


async def embed_query(query: str) -> list[float]:
    """With pool embeddings, the query's vector from this event loop (the sync path would hop to the
    process's background loop from inside this one's sync_to_async, and block this reply on it)."""
    from inference.embeddings import embed

    [vector] = await embed([query.strip()[:1000]], model=settings.EMBEDDINGS_MODEL or None)
    return vector
