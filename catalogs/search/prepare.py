"""Everything of a search that needs no query vector: the filters and the budget read from the question, the
word statistics, the SKU check, the choice of vector plan, and the SQL statements themselves, bundled as a
``PreparedSearch`` for ``run_search``.

The vector plan: tenants of at most ``EXACT_SCAN_MAX_ROWS`` active items are searched exactly (their rows read
through the business index and sorted); larger ones through the HNSW index with ``hnsw.iterative_scan``, so
that a selective tenant filter applied after the index scan does not starve the results.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from businesses.models import Business
from catalogs.models import Chunk, Document, Item
from catalogs.search.filters import (
    SearchFilters,
    filters_from_question,
    merge_filters,
    without_price_phrases,
)
from catalogs.search.words import (
    DF_FALLBACK_CAP,
    WORD,
    bm25_idf,
    quote_lexeme,
    sku_candidates,
    trigram_query_words,
    trigram_windows,
    word_statistics,
)

SearchMode = Literal["hybrid", "vector", "fulltext"]

# Candidates each leg contributes before fusion.
VECTOR_CANDIDATES = 40
FULLTEXT_CANDIDATES = 40
TRIGRAM_CANDIDATES = 40
CHUNK_CANDIDATES = 10
# Tenants with at most this many active items are searched exactly (their rows read through the business
# index and sorted); above it, the HNSW index with iterative scan. See docs/retrieval.md for the measurements.
EXACT_SCAN_MAX_ROWS = 2_000
HNSW_EF_SEARCH = 100
# Queries of at most this many words get typo matching on every word (longer ones on SKU-like tokens only).
SHORT_QUERY_WORDS = 3
MAX_QUERY_WORDS = 32
_TENANT_SIZE_TTL = 60.0


@dataclass(frozen=True)
class PreparedSearch:
    """A search up to its vector: the statements, their parameters and what fusion needs."""

    query: str
    mode: SearchMode
    limit: int
    item_sql: str | None  # None: nothing can match (full text only, and no word the catalog knows)
    chunk_sql: str | None
    params: dict[str, Any]
    set_local: bool
    idf: dict[str, float]
    trigram_words: list[str]
    skus: list[str]
    budget: tuple[Decimal | None, Decimal | None]
    # "in stock" in the question, read as a preference: unavailable rows are demoted, not hidden.
    prefer_in_stock: bool = False
    # Slots of ``limit`` kept for the best document chunks when items would fill them all.
    min_passages: int = 0


# --- Tenant size (which vector plan) -------------------------------------------------------------------

_sizes: dict[int, tuple[float, int]] = {}
_sizes_lock = threading.Lock()


def _active_rows(business_id: int) -> int:
    """The tenant's active item count, cached per process for a minute (it picks a plan and scales idf)."""
    now = time.monotonic()
    with _sizes_lock:
        cached = _sizes.get(business_id)
    if cached and now - cached[0] < _TENANT_SIZE_TTL:
        return cached[1]
    count = Item.objects.filter(business_id=business_id, is_active=True).count()
    with _sizes_lock:
        _sizes[business_id] = (now, count)
    return count


def vector_plan(business: Business) -> Literal["exact", "hnsw"]:
    """Which vector plan ``search`` uses for this business (exact scan on small tenants)."""
    return "exact" if _active_rows(business.pk) <= EXACT_SCAN_MAX_ROWS else "hnsw"


# --- The statements -------------------------------------------------------------------------------------


def _filter_sql(filters: SearchFilters, params: dict[str, Any], alias: str = "i") -> str:
    clauses = []
    if filters.in_stock_only:
        clauses.append(f"{alias}.availability = 'in_stock'")
    effective = f"COALESCE({alias}.sale_price, {alias}.price)"
    if filters.min_price is not None:
        params["min_price"] = filters.min_price
        clauses.append(f"{effective} >= %(min_price)s")
    if filters.max_price is not None:
        params["max_price"] = filters.max_price
        clauses.append(f"{effective} <= %(max_price)s")
    if filters.category:
        params["category"] = filters.category
        clauses.append(f"lower({alias}.category) = lower(%(category)s)")
    return "".join(f" AND {clause}" for clause in clauses)


def _sku_exists(business_id: int, skus: list[str]) -> bool:
    return Item.objects.filter(business_id=business_id, is_active=True, external_id__in=skus).exists()


def prepare_search(
    business: Business,
    query: str,
    *,
    filters: SearchFilters | None = None,
    limit: int = 10,
    mode: SearchMode = "hybrid",
    include_chunks: bool = True,
    read_question: bool = True,
    stock_words: Literal["filter", "prefer"] = "filter",
    min_passages: int = 0,
) -> PreparedSearch | None:
    """Everything of ``search`` that does not need the query's vector: the filters read from the question,
    the word statistics (one or two round trips), the SKU check, the statements. None for an empty query.

    ``stock_words="prefer"``: "in stock" in the question demotes unavailable rows instead of hiding them (a
    chat agent asked "is the X in stock?" must find the X to say it is not). ``min_passages``: that many of
    the ``limit`` places go to the best matching document chunks, if any, even when items score higher ("can
    I return a used sleeping bag?" matches every sleeping bag better than the returns passage)."""
    query = (query or "").strip()[:1000]
    if not query or limit <= 0:
        return None
    hybrid = mode == "hybrid"
    # Stated in the question: "in stock" is a hard filter; a price bound is a preference (an item slightly
    # over budget is demoted, not hidden, because customers stretch budgets and the agent can say so).
    # Explicit ``filters`` are always hard.
    asked = filters_from_question(query) if hybrid and read_question else SearchFilters()
    prefer_in_stock = asked.in_stock_only and stock_words == "prefer"
    filters = merge_filters(filters, SearchFilters(in_stock_only=asked.in_stock_only and not prefer_in_stock))
    budget = (
        asked.min_price if filters.min_price is None else None,
        asked.max_price if filters.max_price is None else None,
    )
    use_vector = mode in ("hybrid", "vector")
    use_lexical = mode in ("hybrid", "fulltext")
    params: dict[str, Any] = {"business": business.pk, "query": query, "qv": None}
    item_filters = _filter_sql(filters, params)
    tenant_rows = _active_rows(business.pk)
    # A price phrase read as a budget ("under 200") is not words to match.
    text = without_price_phrases(query) if hybrid else query
    words = list(dict.fromkeys(WORD.findall(text.lower())))[:MAX_QUERY_WORDS]
    # Short as the customer typed it ("ebike under 2000" is a sentence, not a keyword query).
    short = len(WORD.findall(query)) <= SHORT_QUERY_WORDS
    idf: dict[str, float] = {}
    unknown: set[str] = set()
    common: set[str] = set()
    if use_lexical:
        idf, unknown, common = word_statistics(business.pk, words, tenant_rows, find_unknown=hybrid and short)
    # OR of the question's words (a chat question shares only some of its words with the item), without
    # the common ones: ranking the thousands of rows that share only a common word would cost more than
    # it finds (the vector leg already covers them; they are still scored). The full-text-only mode keeps
    # them when nothing rarer is left.
    selective = [lexeme for lexeme in idf if lexeme not in common]
    if mode == "fulltext" and not selective:
        selective = list(idf)
    elif not selective and idf and short:
        # A short query of common words ("Ortlieb bag" in a large bag shop): its rarest word, if rare enough.
        rarest = max(idf, key=lambda lexeme: idf[lexeme])
        if idf[rarest] >= bm25_idf(DF_FALLBACK_CAP, tenant_rows):
            selective = [rarest]
    params["tsq"] = " | ".join(quote_lexeme(lexeme) for lexeme in selective)
    # Typo matching on every word of a long chat sentence mostly finds look-alike words ("electric" ~
    # "Electra"): it runs on short queries, and only on the words the catalog does not contain (a typo is
    # unknown by definition). SKU-like tokens always get it.
    skus = sku_candidates(text) if hybrid else []
    params["skus"] = skus
    # A SKU found as typed needs no fuzzy matching (and a SKU's trigrams, "sku", "  s", are in every row).
    exact_sku = bool(skus) and _sku_exists(business.pk, skus)
    trigram_words = (
        trigram_query_words(text, typo_words=unknown if short else set(), skus=not exact_sku)
        if hybrid
        else []
    )
    windows = trigram_windows(trigram_words)
    plan: Literal["exact", "hnsw"] = "exact" if tenant_rows <= EXACT_SCAN_MAX_ROWS else "hnsw"
    with_chunks = include_chunks and not (
        filters.in_stock_only
        or filters.min_price is not None
        or filters.max_price is not None
        or filters.category
    )

    item_table = Item._meta.db_table
    chunk_table = Chunk._meta.db_table
    document_table = Document._meta.db_table
    base = f"i.business_id = %(business)s AND i.is_active{item_filters}"
    # On a large tenant the lexical legs' GIN matches are few and the tenant's rows many: ANDing a bitmap
    # of 100k business rows costs more than filtering the matches (docs/retrieval.md), so the business
    # condition is made non-indexable there (still applied, as a filter). Small tenants keep the business
    # index, which beats GIN matches spread over other tenants.
    lexical_base = base.replace("i.business_id =", "i.business_id + 0 =", 1) if plan == "hnsw" else base
    ranking = "ts_rank({alias}.search_vector, %(tsq)s::tsquery)"
    legs: list[str] = []
    # The exact plan orders by an expression the HNSW index cannot serve, so the planner reads the tenant's
    # rows through the business index and sorts them: exact results, no starvation. The HNSW plan relies
    # on iterative scan (set by run_search) to keep walking the graph until enough of this tenant's rows pass.
    distance = "(i.embedding <=> %(qv)s::vector)" + (" + 0" if plan == "exact" else "")
    if use_vector:
        legs.append(
            f"(SELECT i.id FROM {item_table} i WHERE {base} AND i.embedding IS NOT NULL "
            f"ORDER BY {distance} LIMIT {VECTOR_CANDIDATES})"
        )
    if use_lexical and selective:
        legs.append(
            f"(SELECT i.id FROM {item_table} i WHERE {lexical_base} AND i.search_vector @@ %(tsq)s::tsquery "
            f"ORDER BY {ranking.format(alias='i')} DESC, i.id LIMIT {FULLTEXT_CANDIDATES})"
        )
    if windows:
        for n, window in enumerate(windows):
            params[f"w{n}"] = window
        window_sql = " OR ".join(f"i.search_trigrams @> %(w{n})s::text[]" for n in range(len(windows)))
        legs.append(
            f"(SELECT i.id FROM {item_table} i WHERE {lexical_base} AND ({window_sql}) "
            f"LIMIT {TRIGRAM_CANDIDATES})"
        )
    if skus:
        legs.append(f"(SELECT i.id FROM {item_table} i WHERE {base} AND i.external_id = ANY(%(skus)s))")

    vector_score = "1 - (i.embedding <=> %(qv)s::vector)" if use_vector else "0"
    item_sql = (
        f"WITH candidates AS ({' UNION '.join(legs)}) "
        "SELECT i.id, i.external_id, i.title, i.description, i.price, i.sale_price, i.currency, "
        "i.availability, i.url, i.image_url, i.brand, i.category, "
        f"COALESCE({vector_score}, 0), i.search_vector::text, "
        f"{'i.search_trigrams' if trigram_words else 'NULL'}, "
        f"{ranking.format(alias='i') if use_lexical else '0'} "
        # "+ 0": the candidates drive the join through the primary key. The business index, estimated at a
        # row or two on a catalog imported since the last ANALYZE, made the planner rescan the candidates
        # once per business row instead. The business condition is still applied, as a filter.
        f"FROM {item_table} i JOIN candidates c ON c.id = i.id WHERE i.business_id + 0 = %(business)s"
    )
    chunk_sql = None
    if with_chunks:
        chunk_legs = []
        chunk_base = "ch.business_id = %(business)s AND d.business_id = %(business)s AND d.is_active"
        join = f"{chunk_table} ch JOIN {document_table} d ON d.id = ch.document_id"
        if use_vector:
            chunk_legs.append(
                f"(SELECT ch.id FROM {join} WHERE {chunk_base} AND ch.embedding IS NOT NULL "
                f"ORDER BY (ch.embedding <=> %(qv)s::vector) + 0 LIMIT {CHUNK_CANDIDATES})"
            )
        if use_lexical and selective:
            chunk_legs.append(
                f"(SELECT ch.id FROM {join} WHERE {chunk_base} AND ch.search_vector @@ %(tsq)s::tsquery "
                f"ORDER BY {ranking.format(alias='ch')} DESC, ch.id LIMIT {CHUNK_CANDIDATES})"
            )
        chunk_vector = "1 - (ch.embedding <=> %(qv)s::vector)" if use_vector else "0"
        chunk_sql = (
            f"WITH candidates AS ({' UNION '.join(chunk_legs)}) "
            f"SELECT ch.id, ch.document_id, d.title, ch.heading, ch.text, COALESCE({chunk_vector}, 0), "
            f"ch.search_vector::text, {ranking.format(alias='ch') if use_lexical else '0'} "
            f"FROM {join} JOIN candidates c ON c.id = ch.id WHERE {chunk_base}"
        )

    return PreparedSearch(
        query=query,
        mode=mode,
        limit=limit,
        item_sql=None if mode == "fulltext" and not idf else item_sql,
        chunk_sql=chunk_sql,
        params=params,
        set_local=use_vector and plan == "hnsw",
        idf=idf,
        trigram_words=trigram_words,
        skus=skus,
        budget=budget,
        prefer_in_stock=prefer_in_stock,
        min_passages=min_passages if with_chunks else 0,
    )
