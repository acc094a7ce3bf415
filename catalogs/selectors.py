"""Catalog reads. Every function takes the business first and never returns another business's rows.

``search()`` is the hybrid retrieval the agent grounds its answers on (docs/retrieval.md explains it):
three legs gather candidates inside one business's active items (and its document chunks), then every
candidate is scored on all legs and the scores are fused.

- vector: pgvector cosine distance over ``embedding``; the HNSW index with ``hnsw.iterative_scan`` on large
  tenants, an exact scan of the tenant's rows on small ones (``EXACT_SCAN_MAX_ROWS``);
- full text: the generated ``search_vector`` (title A, brand and category B, description C, English
  stemming), queried with OR semantics because a chat question shares only some words with an item;
- trigrams: the generated ``search_trigrams`` (character trigrams of title and external id, GIN-indexed), for
  SKUs and misspellings (pg_trgm is not available in the embedded Postgres, so the trigrams are our own);
- an exact external-id (SKU) match.

Fusion is score-aware, not rank-based: the cosine similarity of every candidate (computed exactly, the
vectors are at hand) plus bounded boosts from the lexical legs. The dense leg is the stronger one on chat
questions, so lexical evidence re-orders close calls and brings in exact names, SKUs and typos, but a weak
keyword hit cannot push a semantically better item out of the results.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from django.db import connection, transaction

from businesses.models import Business
from catalogs.models import Chunk, Document, Item

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
# A word in this many of the tenant's items or more is "common": it still scores every candidate, but does
# not select full-text candidates, because ranking the hundreds of rows that share only a common word costs
# more than it finds on a 100k-item tenant (measured: 500 matches of a brand, 15 of 20 ms of the query).
DF_CAP = 300
# ...except in a short query whose words are all common: there its rarest word below this selects.
DF_FALLBACK_CAP = 3_000
# Tenants up to this many active items get exact document frequencies (one pass over their rows); larger
# ones an estimate from PostgreSQL's column statistics.
EXACT_STATS_MAX_ROWS = 5_000
# Full-text field weights (search_vector: A title, B brand/category, C description; D unused).
FIELD_WEIGHTS = {"A": 1.0, "B": 0.6, "C": 0.4, "D": 0.2}
# Fusion: score = cosine + LEXICAL_WEIGHT * lexical + TRIGRAM_WEIGHT * trigram (+ SKU_BOOST on an exact SKU).
LEXICAL_WEIGHT = 0.15
TRIGRAM_WEIGHT = 0.5
SKU_BOOST = 1.0
# An item outside a price range stated in the question, or one that cannot be bought now, is demoted.
BUDGET_PENALTY = 0.05
UNAVAILABLE_PENALTY = 0.02
# ...and more when the question asks for what is in stock, read as a preference (prepare_search's stock_words).
STOCK_ASKED_PENALTY = 0.1
UNAVAILABLE = frozenset({"out_of_stock", "discontinued"})
# Below this share of a word's trigrams, two words only share a suffix ("-ing").
TRIGRAM_MIN_SIMILARITY = 0.5
# Queries of at most this many words get typo matching on every word (longer ones on SKU-like tokens only).
SHORT_QUERY_WORDS = 3
MAX_QUERY_WORDS = 32
_TENANT_SIZE_TTL = 60.0


@dataclass(frozen=True)
class SearchFilters:
    """Hard filters. ``None`` means "no constraint"; prices compare the effective (sale, else list) price."""

    in_stock_only: bool = False
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    category: str | None = None


@dataclass
class SearchHit:
    kind: Literal["item", "chunk"]
    item_id: int | None
    chunk_id: int | None
    external_id: str
    title: str
    text: str
    price: Decimal | None
    sale_price: Decimal | None
    currency: str
    availability: str
    url: str
    image_url: str
    brand: str
    category: str
    score: float
    vector_score: float = 0.0
    fulltext_score: float = 0.0
    trigram_score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- Filters from the customer's words ------------------------------------------------------------------

_NUMBER = r"(?:[$€£]\s*)?(\d+(?:[.,]\d{1,2})?)\s*(?:eur|euro|euros|usd|dollars?|gbp|€|\$|£)?"
_MAX_PRICE = re.compile(
    rf"\b(?:under|below|less than|cheaper than|at most|max(?:imum)?|up to|no more than|within)\s+{_NUMBER}",
    re.I,
)
_MIN_PRICE = re.compile(
    rf"\b(?:over|above|more than|at least|min(?:imum)?|from)\s+{_NUMBER}(?!\s*(?:to|-))", re.I
)
_BETWEEN = re.compile(rf"\bbetween\s+{_NUMBER}\s+and\s+{_NUMBER}", re.I)
_IN_STOCK = re.compile(r"\b(?:in stock|available (?:now|today)|in store now)\b", re.I)


def _decimal(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", "."))
    except InvalidOperation:
        return None


def filters_from_question(question: str) -> SearchFilters:
    """Price bounds and "in stock" stated in a chat question ("electric bike under 2000")."""
    min_price = max_price = None
    if match := _BETWEEN.search(question):
        min_price, max_price = _decimal(match.group(1)), _decimal(match.group(2))
    else:
        if match := _MAX_PRICE.search(question):
            max_price = _decimal(match.group(1))
        if match := _MIN_PRICE.search(question):
            min_price = _decimal(match.group(1))
    return SearchFilters(
        in_stock_only=bool(_IN_STOCK.search(question)), min_price=min_price, max_price=max_price
    )


def _without_price_phrases(question: str) -> str:
    for pattern in (_BETWEEN, _MAX_PRICE, _MIN_PRICE):
        question = pattern.sub(" ", question)
    return question


def _merge_filters(explicit: SearchFilters | None, parsed: SearchFilters) -> SearchFilters:
    if explicit is None:
        return parsed
    return replace(
        explicit,
        in_stock_only=explicit.in_stock_only or parsed.in_stock_only,
        min_price=explicit.min_price if explicit.min_price is not None else parsed.min_price,
        max_price=explicit.max_price if explicit.max_price is not None else parsed.max_price,
    )


# --- Query text -> lexical queries ----------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SKU_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*\d[A-Za-z0-9._/-]*|\d+[A-Za-z][A-Za-z0-9._/-]*")
# Words a chat question is full of that carry no product meaning: kept out of the trigram leg (the English
# full-text configuration drops its own stop words).
_TRIGRAM_STOP = frozenset(
    [
        "about",
        "also",
        "anything",
        "can",
        "could",
        "does",
        "have",
        "just",
        "like",
        "looking",
        "need",
        "some",
        "something",
        "that",
        "their",
        "there",
        "these",
        "they",
        "this",
        "want",
        "what",
        "when",
        "where",
        "which",
        "with",
        "would",
        "your",
        "from",
        "into",
        "than",
        "then",
        "them",
    ]
)


def word_trigrams(word: str) -> list[str]:
    """pg_trgm's scheme: lower case, two spaces before and one after the word, every 3-character window.

    Must match the SQL function ``catalogs_trigrams`` (migration 0002) for the tokens it keeps.
    """
    padded = f"  {word.lower()} "
    return [padded[i : i + 3] for i in range(len(padded) - 2)]


def _trigram_words(query: str, *, typo_words: set[str], skus: bool = True) -> list[str]:
    """The query words that get trigram matching: SKU-like tokens (when ``skus``), and ``typo_words``."""
    words: list[str] = []
    for word in _WORD.findall(query.lower()):
        # A number alone ("200" in "under 200") is a price or a size, not a SKU: SKU-like means a digit in
        # a word of 4+ characters that is not only digits, or 5+ digits.
        has_digit = any(c.isdigit() for c in word) and (not word.isdigit() or len(word) >= 5)
        typo = word in typo_words and len(word) >= 4 and word not in _TRIGRAM_STOP
        if ((skus and has_digit and len(word) >= 4) or typo) and word not in words:
            words.append(word)
    # A SKU typed with its separators ("vv-bk-031") is also indexed as one alphanumeric word ("vvbk031").
    for token in _SKU_TOKEN.findall(query) if skus else ():
        joined = re.sub(r"[\W_]+", "", token.lower())
        if len(joined) >= 4 and (not joined.isdigit() or len(joined) >= 5) and joined not in words:
            words.append(joined)
    return words[:12]


def _trigram_windows(words: list[str]) -> list[list[str]]:
    """Windows of 3 consecutive trigrams per word: the GIN conditions that select trigram candidates.

    A single typo changes at most 3 trigrams of a word, so in a word of 5 or more characters some window of
    3 consecutive trigrams survives it; requiring a whole window (``@>``) keeps the candidate set small where
    any single trigram (``&&``) would match most of a large catalog.
    """
    windows: list[list[str]] = []
    for word in words:
        trigrams = word_trigrams(word)
        if len(trigrams) <= 3:
            windows.append(trigrams)
        else:
            # The first window holds the word-start trigram ("  k"), shared by every word with that first
            # letter: a slow GIN intersection on a large catalog, and the other windows still cover a typo
            # past the first letter.
            first = 1 if len(trigrams) >= 6 else 0
            windows.extend(trigrams[i : i + 3] for i in range(first, len(trigrams) - 2))
    return windows


def _sku_candidates(query: str) -> list[str]:
    tokens = {token.strip(".,;:!?()[]\"'") for token in query.split()}
    out: set[str] = set()
    for token in tokens:
        if len(token) >= 3 and any(c.isdigit() for c in token):
            out.update({token, token.upper(), token.lower()})
    return sorted(out)


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


# --- Search ---------------------------------------------------------------------------------------------


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


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
) -> PreparedSearch | None:
    """Everything of ``search`` that does not need the query's vector: the filters read from the question,
    the word statistics (one or two round trips), the SKU check, the statements. None for an empty query.

    ``stock_words="prefer"``: "in stock" in the question demotes unavailable rows instead of hiding them (a
    chat agent asked "is the X in stock?" must find the X to say it is not)."""
    query = (query or "").strip()[:1000]
    if not query or limit <= 0:
        return None
    hybrid = mode == "hybrid"
    # Stated in the question: "in stock" is a hard filter; a price bound is a preference (an item slightly
    # over budget is demoted, not hidden, because customers stretch budgets and the agent can say so).
    # Explicit ``filters`` are always hard.
    asked = filters_from_question(query) if hybrid and read_question else SearchFilters()
    prefer_in_stock = asked.in_stock_only and stock_words == "prefer"
    filters = _merge_filters(
        filters, SearchFilters(in_stock_only=asked.in_stock_only and not prefer_in_stock)
    )
    budget = (
        asked.min_price if filters.min_price is None else None,
        asked.max_price if filters.max_price is None else None,
    )
    use_vector = mode in ("hybrid", "vector")
    use_lexical = mode in ("hybrid", "fulltext")
    params: dict[str, Any] = {"business": business.pk, "query": query, "qv": None}
    item_filters = _filter_sql(filters, params)
    # Typo matching on every word of a long chat sentence mostly finds look-alike words ("electric" ~
    # "Electra"); it earns its place on short queries, and SKU-like tokens always get it.
    tenant_rows = _active_rows(business.pk)
    # A price phrase read as a budget ("under 200") is not words to match.
    text = _without_price_phrases(query) if hybrid else query
    words = list(dict.fromkeys(_WORD.findall(text.lower())))[:MAX_QUERY_WORDS]
    # Short as the customer typed it ("ebike under 2000" is a sentence, not a keyword query).
    short = len(_WORD.findall(query)) <= SHORT_QUERY_WORDS
    idf: dict[str, float] = {}
    unknown: set[str] = set()
    common: set[str] = set()
    if use_lexical:
        idf, unknown, common = _word_statistics(
            business.pk, words, tenant_rows, find_unknown=hybrid and short
        )
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
        if idf[rarest] >= _idf(DF_FALLBACK_CAP, tenant_rows):
            selective = [rarest]
    params["tsq"] = " | ".join(_quote_lexeme(lexeme) for lexeme in selective)
    # Typo matching on every word of a long chat sentence mostly finds look-alike words ("electric" ~
    # "Electra"): it runs on short queries, and only on the words the catalog does not contain (a typo is
    # unknown by definition). SKU-like tokens always get it.
    skus = _sku_candidates(text) if hybrid else []
    params["skus"] = skus
    # A SKU found as typed needs no fuzzy matching (and a SKU's trigrams, "sku", "  s", are in every row).
    exact_sku = bool(skus) and _sku_exists(business.pk, skus)
    trigram_words = (
        _trigram_words(text, typo_words=unknown if short else set(), skus=not exact_sku) if hybrid else []
    )
    windows = _trigram_windows(trigram_words)
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
    # of 100k business rows costs more than filtering the matches (measured: 7 of 8 ms), so the business
    # condition is made non-indexable there (still applied, as a filter). Small tenants keep the business
    # index, which beats GIN matches spread over other tenants.
    lexical_base = base.replace("i.business_id =", "i.business_id + 0 =", 1) if plan == "hnsw" else base
    ranking = "ts_rank({alias}.search_vector, %(tsq)s::tsquery)"
    legs: list[str] = []
    # The exact plan orders by an expression the HNSW index cannot serve, so the planner reads the tenant's
    # rows through the business index and sorts them: exact results, no starvation. The HNSW plan relies
    # on iterative scan (set below) to keep walking the graph until enough of this tenant's rows pass.
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
    )


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

    return _fuse(
        item_rows,
        chunk_rows,
        mode=prepared.mode,
        limit=prepared.limit,
        idf=prepared.idf,
        trigram_words=prepared.trigram_words,
        skus=prepared.skus,
        budget=prepared.budget,
        prefer_in_stock=prepared.prefer_in_stock,
    )


def _word_statistics(
    business_id: int, words: list[str], tenant_rows: int, *, find_unknown: bool
) -> tuple[dict[str, float], set[str], set[str]]:
    """The idf of each English lexeme of the query's words in this business, the words it lacks (only when
    ``find_unknown``), and the common lexemes (document frequency at ``DF_CAP`` or more). Stop words have no
    lexeme.

    Small tenants (``EXACT_STATS_MAX_ROWS``) are counted exactly, in one pass over their rows. Larger ones
    are estimated from PostgreSQL's own statistics of the column (the most common lexemes and their row
    share, from ANALYZE) scaled to the tenant: a lexeme missing from that list is rare. Counting a common
    word in a 100k-item tenant costs milliseconds per word; the estimate costs nothing.
    """
    if not words:
        return {}, set(), set()
    with connection.cursor() as cursor:
        pairs = [(word, lexeme) for word, lexemes in _english_lexemes(cursor, words) for lexeme in lexemes]
        lexemes = list(dict.fromkeys(lexeme for _, lexeme in pairs))
        if not lexemes:
            return {}, set(), set()
        df: dict[str, float] = {}
        if tenant_rows <= EXACT_STATS_MAX_ROWS:
            counts = ", ".join(["count(*) FILTER (WHERE i.search_vector @@ %s::tsquery)"] * len(lexemes))
            cursor.execute(
                f"SELECT {counts} FROM {Item._meta.db_table} i WHERE i.business_id = %s AND i.is_active",
                [*(_quote_lexeme(lexeme) for lexeme in lexemes), business_id],
            )
            df = dict(zip(lexemes, map(float, cursor.fetchone()), strict=True))
        else:
            frequencies, floor = _lexeme_frequencies()
            for lexeme in lexemes:
                df[lexeme] = max(1.0, frequencies.get(lexeme, floor / 2) * tenant_rows)
            if find_unknown:
                # Only whether a rare word exists at all in this tenant: a short GIN probe per word.
                rare = [lexeme for lexeme in lexemes if lexeme not in frequencies]
                for lexeme in rare:
                    cursor.execute(
                        f"SELECT EXISTS (SELECT 1 FROM {Item._meta.db_table} i WHERE i.business_id = %s "
                        "AND i.is_active AND i.search_vector @@ %s::tsquery)",
                        [business_id, _quote_lexeme(lexeme)],
                    )
                    if not cursor.fetchone()[0]:
                        df[lexeme] = 0.0
    total = max(tenant_rows, 1)
    idf: dict[str, float] = {}
    common = {lexeme for lexeme, count in df.items() if count >= DF_CAP}
    for lexeme, count in df.items():
        if count:
            idf[lexeme] = _idf(count, total)
    # A word is unknown when none of its lexemes occurs (exactly known on small tenants, probed on large).
    unknown = {word for word, _ in pairs if all(df.get(lexeme) == 0 for w, lexeme in pairs if w == word)}
    if tenant_rows > EXACT_STATS_MAX_ROWS and not find_unknown:
        unknown = set()
    return idf, unknown, common


_LEXEME_CACHE_WORDS = 50_000
_lexemes_of: dict[str, tuple[str, ...]] = {}
_lexemes_lock = threading.Lock()


def _english_lexemes(cursor: Any, words: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Each word's English lexemes (none for a stop word), as PostgreSQL's ``english`` configuration makes
    them. Remembered per process: a word's lexemes never change, and chat questions reuse few words, so most
    searches skip this round trip."""
    with _lexemes_lock:
        known = {word: _lexemes_of[word] for word in words if word in _lexemes_of}
    missing = [word for word in words if word not in known]
    if missing:
        cursor.execute(
            "SELECT w, array_remove(array_agg(lex ORDER BY lex), NULL) FROM unnest(%s::text[]) AS w "
            "LEFT JOIN LATERAL unnest(tsvector_to_array(to_tsvector('english', w))) AS lex ON true GROUP BY w",
            [missing],
        )
        found = {word: tuple(lexemes) for word, lexemes in cursor.fetchall()}
        with _lexemes_lock:
            if len(_lexemes_of) + len(found) > _LEXEME_CACHE_WORDS:
                _lexemes_of.clear()  # a crude bound: the common words come back at once
            _lexemes_of.update(found)
        known.update(found)
    return [(word, known[word]) for word in words]


_frequencies: tuple[float, dict[str, float], float] | None = None


def _lexeme_frequencies() -> tuple[dict[str, float], float]:
    """PostgreSQL's most common lexemes of ``Item.search_vector`` with their row share, and the smallest
    share listed (cached per process for 10 minutes; ANALYZE, manual or automatic, refreshes the source)."""
    global _frequencies
    now = time.monotonic()
    if _frequencies is not None and now - _frequencies[0] < 600:
        return _frequencies[1], _frequencies[2]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE tablename = %s AND attname = 'search_vector'",
            [Item._meta.db_table],
        )
        row = cursor.fetchone()
    frequencies: dict[str, float] = {}
    floor = 0.0
    if row and row[0]:
        elements, freqs = row
        # The last three numbers are the minimum, the maximum and the null share, not per-element values.
        frequencies = dict(zip(elements, freqs[: len(elements)], strict=True))
        floor = float(freqs[len(elements)]) if len(freqs) > len(elements) else min(frequencies.values())
    _frequencies = (now, frequencies, floor)
    return frequencies, floor


def _sku_exists(business_id: int, skus: list[str]) -> bool:
    return Item.objects.filter(business_id=business_id, is_active=True, external_id__in=skus).exists()


def _idf(df: float, total: int) -> float:
    # BM25's idf: a word every item has ("bike" in a bike shop) says almost nothing.
    return math.log(1 + (max(total, 1) - df + 0.5) / (df + 0.5))


def _quote_lexeme(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _leg_score(mode: SearchMode, vector: object, lexical: float, rank: object) -> float | None:
    """The score of one row for a search mode, before item-only boosts; None: the row does not match."""
    if mode == "vector":
        return float(vector)  # type: ignore[arg-type]
    if mode == "fulltext":
        if lexical <= 0:
            return None
        # ts_rank only breaks ties between rows holding the same words.
        return lexical + 1e-3 * float(rank)  # type: ignore[arg-type]
    return float(vector) + LEXICAL_WEIGHT * lexical  # type: ignore[arg-type]


def _lexical_score(tsvector_text: str, idf: dict[str, float]) -> float:
    """Share of the query's idf mass the row holds, each word weighted by its best field (title > ...)."""
    if not idf or not tsvector_text:
        return 0.0
    got = 0.0
    for lexeme, weight in idf.items():
        positions = _tsvector_positions(tsvector_text, lexeme)
        if positions is not None:
            # A position without a letter is weight D.
            got += weight * max(
                FIELD_WEIGHTS.get(p[-1] if p and p[-1] in "ABC" else "D", 0.0) for p in positions
            )
    return got / sum(idf.values())


def _tsvector_positions(tsvector_text: str, lexeme: str) -> list[str] | None:
    """The positions of ``lexeme`` in a tsvector's text (``'lamp':3A,7 'led':4``), None when it is not there.

    A search for the few words of the question, not a parse of the row's every entry (the search scores
    dozens of rows of dozens of entries each, on the way to the first token)."""
    quoted = _quote_lexeme(lexeme)  # as the tsvector's text quotes it
    at = tsvector_text.find(quoted)
    while at >= 0:
        end = at + len(quoted)
        after = tsvector_text[end : end + 1]
        # An entry starts the text or follows a space, and ends at ":" (positions), a space or the end.
        # Quotes inside a lexeme are doubled, so a match that fails this lies inside a longer lexeme.
        if (at == 0 or tsvector_text[at - 1] == " ") and after in ("", ":", " "):
            if after != ":":
                return [""]
            stop = tsvector_text.find(" ", end)
            return tsvector_text[end + 1 : stop if stop >= 0 else None].split(",")
        at = tsvector_text.find(quoted, at + 1)
    return None


def _trigram_score(row_trigrams: Sequence[str] | None, trigram_words: list[str]) -> float:
    """The best share of one query word's trigrams found in the row (a typo keeps most of them)."""
    if not row_trigrams or not trigram_words:
        return 0.0
    present = set(row_trigrams)
    best = 0.0
    for word in trigram_words:
        trigrams = set(word_trigrams(word))
        best = max(best, len(trigrams & present) / len(trigrams))
    return best if best >= TRIGRAM_MIN_SIMILARITY else 0.0


def _fuse(
    item_rows: list[tuple[Any, ...]],
    chunk_rows: list[tuple[Any, ...]],
    *,
    mode: SearchMode,
    limit: int,
    idf: dict[str, float],
    trigram_words: list[str],
    skus: list[str],
    budget: tuple[Decimal | None, Decimal | None],
    prefer_in_stock: bool = False,
) -> list[SearchHit]:
    sku_set = set(skus)
    low, high = budget
    hits: list[SearchHit] = []
    for row in item_rows:
        (item_id, external_id, title, description, price, sale_price, currency, availability, url, image_url,
         brand, category, vector, tsvector_text, row_trigrams, rank) = row  # fmt: skip
        lexical = _lexical_score(tsvector_text, idf)
        trigram = _trigram_score(row_trigrams, trigram_words)
        base = _leg_score(mode, vector, lexical, rank)
        if base is None:
            continue
        score = base
        if mode == "hybrid":
            # Squared: a near-complete trigram match (a typo, a SKU without its dashes) counts, a half
            # match (a look-alike word) barely does.
            score += TRIGRAM_WEIGHT * trigram**2
            score += SKU_BOOST if external_id in sku_set else 0.0
            effective = sale_price if sale_price is not None else price
            if effective is not None and (
                (low is not None and effective < low) or (high is not None and effective > high)
            ):
                score -= BUDGET_PENALTY
            if availability in UNAVAILABLE:
                score -= STOCK_ASKED_PENALTY if prefer_in_stock else UNAVAILABLE_PENALTY
        hits.append(
            SearchHit(
                kind="item",
                item_id=item_id,
                chunk_id=None,
                external_id=external_id,
                title=title,
                text=_snippet(description),
                price=price,
                sale_price=sale_price,
                currency=currency,
                availability=availability,
                url=url,
                image_url=image_url,
                brand=brand,
                category=category,
                score=round(score, 6),
                vector_score=round(float(vector), 6),
                fulltext_score=round(lexical, 6),
                trigram_score=round(trigram, 6),
            )
        )
    for chunk_id, document_id, doc_title, heading, text, vector, tsvector_text, rank in chunk_rows:
        lexical = _lexical_score(tsvector_text, idf)
        chunk_score = _leg_score(mode, vector, lexical, rank)
        if chunk_score is None:
            continue
        score = chunk_score
        hits.append(
            SearchHit(
                kind="chunk",
                item_id=None,
                chunk_id=chunk_id,
                external_id="",
                title=f"{doc_title}: {heading}" if heading else doc_title,
                text=_snippet(text, 600),
                price=None,
                sale_price=None,
                currency="",
                availability="",
                url="",
                image_url="",
                brand="",
                category="",
                score=round(score, 6),
                vector_score=round(float(vector), 6),
                fulltext_score=round(lexical, 6),
                extra={"document_id": document_id},
            )
        )
    hits.sort(key=lambda hit: (-hit.score, hit.kind, hit.item_id or 0, hit.chunk_id or 0))
    return hits[:limit]


def _snippet(text: str, size: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= size else text[: size - 1].rsplit(" ", 1)[0] + "…"


def items_by_ids(business: Business, ids: Iterable[int]) -> dict[int, Item]:
    """This business's active items among ``ids`` (for citations and cards); unknown or foreign ids drop out."""
    wanted = {int(i) for i in ids}
    if not wanted:
        return {}
    return {item.pk: item for item in Item.objects.filter(business=business, is_active=True, pk__in=wanted)}


def items_needing_embedding(business: Business, *, model_name: str, limit: int | None = None) -> list[int]:
    """Ids of this business's active items with no vector, or one from another model than ``model_name``."""
    from django.db.models import Q

    qs = (
        Item.objects.filter(business=business, is_active=True)
        .filter(Q(embedding__isnull=True) | ~Q(embedding_model=model_name))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return list(qs[:limit] if limit else qs)
