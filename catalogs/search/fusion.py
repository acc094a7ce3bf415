"""Scoring and fusion: every candidate row the statements return is scored on every leg, and the scores are
fused into ``SearchHit``s, best first.

Fusion is score-aware, not rank-based: the cosine similarity of every candidate (computed exactly, the vectors
are at hand) plus bounded boosts from the lexical legs. The dense leg is the stronger one on chat questions,
so lexical evidence re-orders close calls and brings in exact names, SKUs and typos, but a weak keyword hit
cannot push a semantically better item out of the results (docs/retrieval.md, "Why not reciprocal rank
fusion").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from catalogs.search.prepare import SearchMode
from catalogs.search.words import quote_lexeme, word_trigrams

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


def lexical_score(tsvector_text: str, idf: dict[str, float]) -> float:
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
    quoted = quote_lexeme(lexeme)  # as the tsvector's text quotes it
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


def fuse(
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
    min_passages: int = 0,
) -> list[SearchHit]:
    """The best ``limit`` hits among the rows of the item and chunk statements (in the column order
    ``prepare_search`` selects), ties broken by kind and id so that results are stable. The best
    ``min_passages`` chunks are among them whenever they matched, in place of the weakest items."""
    sku_set = set(skus)
    low, high = budget
    hits: list[SearchHit] = []
    for row in item_rows:
        (item_id, external_id, title, description, price, sale_price, currency, availability, url, image_url,
         brand, category, vector, tsvector_text, row_trigrams, rank) = row  # fmt: skip
        lexical = lexical_score(tsvector_text, idf)
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
        lexical = lexical_score(tsvector_text, idf)
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
    return _keep_passages(hits, limit, min_passages)


def _keep_passages(ranked: list[SearchHit], limit: int, min_passages: int) -> list[SearchHit]:
    """The first ``limit`` of ``ranked``, with the best ``min_passages`` chunks in place of the weakest items
    when they fell below the cut (the order stays the score's: best first)."""
    top = ranked[:limit]
    wanted = [hit for hit in ranked if hit.kind == "chunk"][: min(min_passages, limit)]
    # A chunk in the cut is one of the best chunks (they are ranked alike), so counting them is enough.
    if sum(hit.kind == "chunk" for hit in top) >= len(wanted):
        return top
    items = [hit for hit in top if hit.kind == "item"][: limit - len(wanted)]
    keep = {id(hit) for hit in items + wanted}
    return [hit for hit in ranked if id(hit) in keep]


def _snippet(text: str, size: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= size else text[: size - 1].rsplit(" ", 1)[0] + "…"
