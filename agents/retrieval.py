"""Retrieval for an answer: the business's catalog rows (items and document chunks) for a question, and
the curated answer whose question means the same, if any.

``retrieve`` runs the hybrid search (``catalogs.search``) with the query's embedding on its way meanwhile,
then compares that same vector with the business's curated answers (``agents.selectors.curated_match``: no
second embedding); ``Prefetch`` starts one before the conversation is read, so that it runs while the reply
is claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from agents.prompts import retrieval_query
from agents.question import signals
from agents.selectors import CuratedMatch, curated_match
from businesses.models import Business
from catalogs.embeddings import embed_query as embed_local
from catalogs.search import PreparedSearch, prepare_search, run_search, search
from common import aio, tracing

SEARCH_LIMIT = 6
# Places among the SEARCH_LIMIT rows kept for document passages when the question asks about a policy.
POLICY_PASSAGES = 2


def _business_of(business: Business | int) -> Business:
    # The search reads only the business's id: no query to load the row (a prefetch knows just the id).
    return Business(pk=business) if isinstance(business, int) else business


def _prepare_search(business: Business | int, query: str) -> PreparedSearch | None:
    business = _business_of(business)
    # "Is the X in stock?" must find the X to say that it is not: stock words are a preference here. A
    # question about a policy keeps a place for the best passage: "can I return a used sleeping bag?"
    # matches every sleeping bag better than the returns passage, which is what answers it.
    return prepare_search(
        business,
        query,
        limit=SEARCH_LIMIT,
        stock_words="prefer",
        min_passages=POLICY_PASSAGES if signals(query).policy else 0,
    )


HandedVector = Callable[[], Awaitable[list[float] | None]]
# Catalog rows looked up by a curated answer's own words, for its grounding check.
CURATED_ROWS_LIMIT = 8


@dataclass(frozen=True)
class Found:
    """What retrieval found: the catalog rows (``hits``, best first) and, when a curated answer's question
    means the same as the query, that answer (``curated``) with the rows its text names (``curated_rows``:
    what its prices and stock claims are checked against)."""

    hits: list[Any]
    curated: CuratedMatch | None = None
    curated_rows: list[Any] = field(default_factory=list)


def _search_and_match(
    business: Business | int, prepared: PreparedSearch, query: str, vector: list[float] | None
) -> Found:
    """In a database thread: the search, then the curated answers compared with the same vector (embedded
    here with the local model when none came, once for both)."""
    if vector is None and prepared.item_sql is not None and prepared.mode != "fulltext":
        vector = embed_local(prepared.query)
    hits = run_search(prepared, vector)
    curated = curated_match(business, query, vector)
    if curated is None:
        return Found(hits)
    # The rows the answer names, by its words alone (full text, no model call): a price it states is
    # checked against them even when the question's own search did not bring that product.
    rows = search(
        _business_of(business),
        curated.answer,
        mode="fulltext",
        include_chunks=False,
        read_question=False,
        limit=CURATED_ROWS_LIMIT,
    )
    return Found(hits, curated, rows)


async def retrieve(business: Business | int, query: str, handed_vector: HandedVector | None = None) -> Found:
    """The business's catalog rows (items and document chunks) for ``query``, best first, and the curated
    answer that matches it (``Found``).

    The search's word statistics are read while the query's embedding is on its way (they do not need it):
    the vector's wait and the statistics' round trips overlap. ``handed_vector``: the query's vector from
    an embedding started earlier (None when none came: the query is embedded here)."""
    business_id = business if isinstance(business, int) else business.pk
    with tracing.span("retrieval", business_id=business_id, query_chars=len(query)):
        return await _retrieve(business, query, handed_vector)


async def _retrieve(business: Business | int, query: str, handed_vector: HandedVector | None) -> Found:
    vector = asyncio.ensure_future(_query_vector(query.strip(), handed_vector))
    # Not awaited when the statistics fail or nothing can match: its outcome then is nobody's business.
    vector.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        prepared = await aio.database(_prepare_search, business, query)
        if prepared is None:
            return Found([])
        return await aio.database(_search_and_match, business, prepared, query, await vector)
    finally:
        if not vector.done():
            vector.cancel()


@dataclass(frozen=True)
class Prefetch:
    """A retrieval started before the conversation was read (from the customer's message alone), so that it
    runs while the reply is claimed; ``agents.respond`` uses it when the query turns out the same."""

    query: str
    hits: asyncio.Task[Found]

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
