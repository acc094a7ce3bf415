"""The question's words as the lexical legs see them: the words that get trigram (typo and SKU) matching and
their trigram windows, the SKU-like tokens, and each English lexeme's document frequency in the business, as
BM25 idf.

``word_trigrams`` must produce what the SQL function ``catalogs_trigrams`` (migration 0002) stores in
``Item.search_trigrams``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any

from django.db import connection

from catalogs.models import Item

# A word in this many of the tenant's items or more is "common": it still scores every candidate, but does
# not select full-text candidates, because ranking the hundreds of rows that share only a common word costs
# more than it finds on a 100k-item tenant (docs/retrieval.md, "How a query runs").
DF_CAP = 300
# ...except in a short query whose words are all common: there its rarest word below this selects.
DF_FALLBACK_CAP = 3_000
# Tenants up to this many active items get exact document frequencies (one pass over their rows); larger
# ones an estimate from PostgreSQL's column statistics.
EXACT_STATS_MAX_ROWS = 5_000

WORD = re.compile(r"[^\W_]+", re.UNICODE)
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


def trigram_query_words(query: str, *, typo_words: set[str], skus: bool = True) -> list[str]:
    """The query words that get trigram matching: SKU-like tokens (when ``skus``), and ``typo_words``."""
    words: list[str] = []
    for word in WORD.findall(query.lower()):
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


def trigram_windows(words: list[str]) -> list[list[str]]:
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


def sku_candidates(query: str) -> list[str]:
    """The question's tokens that could be an external id as typed (3+ characters with a digit), in the
    cases a catalog is likely to store them."""
    tokens = {token.strip(".,;:!?()[]\"'") for token in query.split()}
    out: set[str] = set()
    for token in tokens:
        if len(token) >= 3 and any(c.isdigit() for c in token):
            out.update({token, token.upper(), token.lower()})
    return sorted(out)


def word_statistics(
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
                [*(quote_lexeme(lexeme) for lexeme in lexemes), business_id],
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
                        [business_id, quote_lexeme(lexeme)],
                    )
                    if not cursor.fetchone()[0]:
                        df[lexeme] = 0.0
    total = max(tenant_rows, 1)
    idf: dict[str, float] = {}
    common = {lexeme for lexeme, count in df.items() if count >= DF_CAP}
    for lexeme, count in df.items():
        if count:
            idf[lexeme] = bm25_idf(count, total)
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


def bm25_idf(df: float, total: int) -> float:
    """BM25's idf: a word every item has ("bike" in a bike shop) says almost nothing."""
    return math.log(1 + (max(total, 1) - df + 0.5) / (df + 0.5))


def quote_lexeme(lexeme: str) -> str:
    """A lexeme as a tsquery operand, quoted the way a tsvector's text quotes it."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
