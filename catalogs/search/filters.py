"""What a search is limited to: ``SearchFilters``, and the price bounds and "in stock" a customer states in a
chat question ("electric bike under 2000"), read by ``filters_from_question``.

``prepare_search`` decides what is hard and what is a preference; this module only reads the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True)
class SearchFilters:
    """Hard filters. ``None`` means "no constraint"; prices compare the effective (sale, else list) price."""

    in_stock_only: bool = False
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    category: str | None = None


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


def without_price_phrases(question: str) -> str:
    """The question with its price phrases blanked out: a budget ("under 200") is not words to match."""
    for pattern in (_BETWEEN, _MAX_PRICE, _MIN_PRICE):
        question = pattern.sub(" ", question)
    return question


def merge_filters(explicit: SearchFilters | None, parsed: SearchFilters) -> SearchFilters:
    """``explicit`` with ``parsed``'s "in stock" added and its price bounds filling the ones left open."""
    if explicit is None:
        return parsed
    return replace(
        explicit,
        in_stock_only=explicit.in_stock_only or parsed.in_stock_only,
        min_price=explicit.min_price if explicit.min_price is not None else parsed.min_price,
        max_price=explicit.max_price if explicit.max_price is not None else parsed.max_price,
    )
