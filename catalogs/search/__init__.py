"""Hybrid retrieval, the search the agent grounds its answers on (docs/retrieval.md explains it): three legs
gather candidates inside one business's active items (and its document chunks), then every candidate is
scored on all legs and the scores are fused.

- vector: pgvector cosine distance over ``embedding``; the HNSW index with ``hnsw.iterative_scan`` on large
  tenants, an exact scan of the tenant's rows on small ones (``EXACT_SCAN_MAX_ROWS``);
- full text: the generated ``search_vector`` (title A, brand and category B, description C, English
  stemming), queried with OR semantics because a chat question shares only some words with an item;
- trigrams: the generated ``search_trigrams`` (character trigrams of title and external id, GIN-indexed), for
  SKUs and misspellings (pg_trgm is not available in the embedded Postgres, so the trigrams are our own);
- an exact external-id (SKU) match.

Modules, each importing only those above it: ``filters`` (what a question limits the search to), ``words``
(the question's words, trigrams and word statistics), ``prepare`` (the vector plan and the statements),
``fusion`` (scores and hits), ``run`` (the statements sent, the rows fused). A search reads one business's
rows only, in every leg and in the final join.
"""

from __future__ import annotations

from catalogs.search.filters import SearchFilters, filters_from_question
from catalogs.search.fusion import SearchHit
from catalogs.search.prepare import PreparedSearch, SearchMode, prepare_search, vector_plan
from catalogs.search.run import run_search, search

__all__ = [
    "PreparedSearch",
    "SearchFilters",
    "SearchHit",
    "SearchMode",
    "filters_from_question",
    "prepare_search",
    "run_search",
    "search",
    "vector_plan",
]
