"""Running a search: ``run_search`` sends a ``PreparedSearch``'s statements with the query vector and fuses
the rows; ``search`` is prepare and run in one call."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction

from businesses.models import Business
from catalogs.search.filters import SearchFilters
from catalogs.search.fusion import SearchHit, fuse
from catalogs.search.prepare import HNSW_EF_SEARCH, PreparedSearch, SearchMode, prepare_search


def search(
    business: Business,
    query: str,
    *,
    filters: SearchFilters | None = None,
    limit: int = 10,
    query_vector: list[float] | None = None,
    mode: SearchMode = "hybrid",
    include_chunks: bool = True,
    read_question: bool = True,
) -> list[SearchHit]:
    """The best ``limit`` active items (and document chunks) of ``business`` for ``query``, best first.

    ``filters`` are hard constraints; in the hybrid mode, price bounds and "in stock" stated in the query
    itself are added to them. ``query_vector`` skips embedding the query (the caller already has it).
    ``mode`` runs one leg alone ("vector", "fulltext": no trigrams, no filters from the question) for
    evaluation. ``read_question=False`` keeps the hybrid mode from reading budget and stock out of the
    question. Chunks have no price or stock, so any price/stock/category filter leaves them out.

    The same as ``run_search(prepare_search(...), query_vector)``: a caller that embeds the query itself
    (the agent, from the pool) prepares while the embedding is on its way.
    """
    prepared = prepare_search(
        business,
        query,
        filters=filters,
        limit=limit,
        mode=mode,
        include_chunks=include_chunks,
        read_question=read_question,
    )
    return run_search(prepared, query_vector) if prepared is not None else []


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def run_search(prepared: PreparedSearch, query_vector: list[float] | None = None) -> list[SearchHit]:
    """The statements of a prepared search, fused into hits. Without ``query_vector`` a search that uses the
    vector leg embeds the query with the local model."""
    if prepared.item_sql is None:
        return []
    if query_vector is None and prepared.mode in ("hybrid", "vector"):
        from catalogs.embeddings import embed_query

        query_vector = embed_query(prepared.query)
    params = {**prepared.params, "qv": _vector_literal(query_vector) if query_vector is not None else None}
    chunk_rows: list[tuple[Any, ...]] = []
    # A transaction only for SET LOCAL: otherwise BEGIN and COMMIT are two round trips for nothing.
    with (
        transaction.atomic() if prepared.set_local else contextlib.nullcontext(),
        connection.cursor() as cursor,
    ):
        if prepared.set_local:
            # SET LOCAL: scoped to this transaction, so a pooled connection does not keep it.
            # One round trip for both (no parameters, so psycopg sends them as one simple query).
            cursor.execute(
                f"SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}"
            )
        if prepared.chunk_sql is None:
            cursor.execute(prepared.item_sql, params)
            item_rows = cursor.fetchall()
        else:
            # Items and chunks in one round trip: both statements are sent before either result is read.
            with connection.cursor() as chunk_cursor, connection.connection.pipeline():
                cursor.execute(prepared.item_sql, params)
                chunk_cursor.execute(prepared.chunk_sql, params)
                item_rows = cursor.fetchall()
                chunk_rows = chunk_cursor.fetchall()

    return fuse(
        item_rows,
        chunk_rows,
        mode=prepared.mode,
        limit=prepared.limit,
        idf=prepared.idf,
        trigram_words=prepared.trigram_words,
        skus=prepared.skus,
        budget=prepared.budget,
        prefer_in_stock=prepared.prefer_in_stock,
        min_passages=prepared.min_passages,
    )
