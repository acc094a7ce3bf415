"""Grounding: check the facts a reply states against the catalog rows it was given, then fix or withhold.

Pure functions (no database, no I/O) over ``GroundItem`` snapshots of the cited items:

- ``find_stock_claims``: "in stock", "available", "sold out", "out of stock", "unavailable", ...;
- ``mentioned_items``: which cited products a sentence names (title, or most of the title's words, or SKU);
- ``check``: puts them together with the prices the text states (``agents.prices.find_prices``). A price
  must equal the list or sale price of the product named in its sentence (or, when the sentence names none,
  of some cited product); a stock claim must match the named product's availability. A price that belongs
  to no cited product is an invented product or price;
- ``apply``: what the customer gets, per the agent's grounding mode: ``correct`` replaces each wrong price
  with the catalog's (and withholds when something cannot be corrected), ``withhold`` replaces the whole
  reply with a safe message plus cards, ``flag`` only records.

Product cards are built from the same rows in ``agents.cards``; policy claims are checked in
``agents.policy_claims``; what the model may add to a composed answer, in ``agents.screen``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypedDict

from agents.prices import PriceMention, find_prices, format_price

_NEGATIVE_STOCK = (
    r"out of stock|sold out|not available|unavailable|not in stock|currently unavailable|no longer available"
)
_POSITIVE_STOCK = r"in stock|available|ready to ship|in store"
_STOCK = re.compile(rf"\b(?P<neg>{_NEGATIVE_STOCK})\b|\b(?P<pos>{_POSITIVE_STOCK})\b", re.IGNORECASE)
# A sentence ends at . ! ? followed by white space (never inside "12.50"), or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "for",
        "with",
        "in",
        "on",
        "to",
        "by",
        "at",
        "or",
        "x",
        "pack",
        "set",
        "new",
        "size",
    ]
)
# Availability values (catalogs.models.Availability) a customer can buy now / cannot.
BUYABLE = frozenset({"in_stock", "preorder", "backorder"})

Mode = Literal["correct", "withhold", "flag"]


@dataclass(frozen=True)
class GroundItem:
    """What grounding needs of one catalog row (a snapshot: the check runs without the database)."""

    item_id: int
    external_id: str
    title: str
    price: Decimal | None
    sale_price: Decimal | None
    currency: str
    availability: str
    url: str = ""
    image_url: str = ""

    @property
    def effective_price(self) -> Decimal | None:
        return self.sale_price if self.sale_price is not None else self.price


@dataclass(frozen=True)
class StockClaim:
    start: int
    end: int
    raw: str
    in_stock: bool


IssueKind = Literal["wrong_price", "unknown_price", "wrong_stock", "wrong_policy"]
Action = Literal["none", "corrected", "withheld", "flagged"]


@dataclass
class Issue:
    kind: IssueKind
    text: str
    start: int
    end: int
    item_id: int | None = None
    expected: str = ""


class IssueJson(TypedDict):
    """An ``Issue`` as stored on the reply (its offsets are dropped: they point into a text not kept)."""

    kind: IssueKind
    text: str
    item_id: int | None
    expected: str


class GroundingJson(TypedDict):
    """A ``GroundingResult`` as stored on the reply (``Message.grounding``, with what ``agents.respond`` adds)."""

    mode: str
    ok: bool
    action: Action
    issues: list[IssueJson]
    prices_checked: int
    stock_checked: int
    products_mentioned: list[int]


@dataclass
class GroundingResult:
    mode: str
    ok: bool
    action: Action
    issues: list[Issue] = field(default_factory=list)
    prices_checked: int = 0
    stock_checked: int = 0
    products_mentioned: list[int] = field(default_factory=list)

    def as_json(self) -> GroundingJson:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "action": self.action,
            "issues": [
                {"kind": i.kind, "text": i.text, "item_id": i.item_id, "expected": i.expected}
                for i in self.issues
            ],
            "prices_checked": self.prices_checked,
            "stock_checked": self.stock_checked,
            "products_mentioned": list(self.products_mentioned),
        }


def find_stock_claims(text: str) -> list[StockClaim]:
    claims = []
    for match in _STOCK.finditer(text):
        before = text[max(0, match.start() - 12) : match.start()].lower()
        negated = bool(re.search(r"\b(?:not|isn't|aren't|no longer)\s*$", before))
        positive = bool(match.group("pos"))
        claims.append(StockClaim(match.start(), match.end(), match.group(0), in_stock=positive != negated))
    return claims


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if w not in _STOPWORDS and len(w) > 1}


# A sentence that names a product by its full title or SKU names it for sure (more surely than it names a
# variant whose title shares all its words but one: "size M" against "size S").
EXACT_MENTION = 2.0


def mention_score(sentence: str, item: GroundItem) -> float:
    """How surely ``sentence`` names ``item``: ``EXACT_MENTION`` for the full title or the SKU, else the
    share of the title's content words present (counted only from two words up: one shared word names
    nothing)."""
    lowered = " ".join(_words(sentence))
    title = " ".join(_words(item.title))
    if title and f" {title} " in f" {lowered} ":
        return EXACT_MENTION
    if item.external_id and re.search(rf"(?<![\w-]){re.escape(item.external_id)}(?![\w-])", sentence, re.I):
        return EXACT_MENTION
    wanted = _content_words(item.title)
    if not wanted:
        return 0.0
    present = wanted & set(_words(sentence))
    if len(present) < min(2, len(wanted)):
        return 0.0
    share = len(present) / len(wanted)
    return share if share >= 0.6 else 0.0


def mentioned_items(sentence: str, items: list[GroundItem]) -> list[GroundItem]:
    """The cited items the sentence names, best first. An item named only by words that all belong to the
    title of an item named in full is not named ("..., size M, sage green" spelled out does not also name
    "..., size S, sage green", whose words are all there but the size)."""
    scored = [(mention_score(sentence, item), item) for item in items]
    exact = [_content_words(item.title) for score, item in scored if score >= EXACT_MENTION]
    present = set(_words(sentence))

    def shadowed(item: GroundItem) -> bool:
        words = _content_words(item.title) & present
        return any(words <= title for title in exact)

    return [
        item
        for score, item in sorted(scored, key=lambda pair: -pair[0])
        if score >= EXACT_MENTION or (score > 0 and not shadowed(item))
    ]


def _position(sentence: str, item: GroundItem) -> int:
    """Where in ``sentence`` the item is named (its SKU, or the first of its title's words)."""
    lowered = sentence.lower()
    spots = [lowered.find(item.external_id.lower())] if item.external_id else []
    spots += [
        m.start()
        for w in _content_words(item.title)
        for m in [re.search(rf"\b{re.escape(w)}\b", lowered)]
        if m
    ]
    found = [spot for spot in spots if spot >= 0]
    return min(found) if found else 0


def _subject(sentence: str, offset: int, named: list[GroundItem]) -> GroundItem:
    """Of the items a sentence names, the one named last before ``offset`` (else the first named)."""
    before = [(pos, item) for item in named if (pos := _position(sentence, item)) <= offset]
    return max(before, key=lambda pair: pair[0])[1] if before else named[0]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text`` that is not blank."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _price_matches(mention: PriceMention, item: GroundItem) -> bool:
    if mention.currency and item.currency and mention.currency != item.currency.upper():
        return False
    return any(p is not None and p == mention.amount for p in (item.price, item.sale_price))


def check(text: str, items: list[GroundItem], *, mode: str = "correct") -> GroundingResult:
    """Every price and stock claim of ``text`` against the cited ``items`` (see the module docstring)."""
    result = GroundingResult(mode=mode, ok=True, action="none")
    mentioned: list[int] = []
    prices = find_prices(text)
    claims = find_stock_claims(text)
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        named = mentioned_items(sentence, items)
        for item in named:
            if item.item_id not in mentioned:
                mentioned.append(item.item_id)
        for mention in (p for p in prices if start <= p.start < end):
            result.prices_checked += 1
            if named:
                if any(_price_matches(mention, item) for item in named):
                    continue
                item = _subject(sentence, mention.start - start, named)
                expected = (
                    format_price(item.effective_price, item.currency, mention)
                    if item.effective_price is not None
                    else ""
                )
                result.issues.append(
                    Issue("wrong_price", mention.raw, mention.start, mention.end, item.item_id, expected)
                )
            elif not any(_price_matches(mention, item) for item in items):
                # No cited product carries this price, and the sentence names none: invented.
                only = items[0] if len(items) == 1 and items[0].effective_price is not None else None
                if only is not None and only.effective_price is not None:
                    result.issues.append(
                        Issue(
                            "wrong_price",
                            mention.raw,
                            mention.start,
                            mention.end,
                            only.item_id,
                            format_price(only.effective_price, only.currency, mention),
                        )
                    )
                else:
                    result.issues.append(Issue("unknown_price", mention.raw, mention.start, mention.end))
        for claim in (c for c in claims if start <= c.start < end):
            subject = (
                _subject(sentence, claim.start - start, named)
                if named
                else (items[0] if len(items) == 1 else None)
            )
            if subject is None:
                continue
            result.stock_checked += 1
            if claim.in_stock != (subject.availability in BUYABLE):
                result.issues.append(
                    Issue(
                        "wrong_stock",
                        claim.raw,
                        claim.start,
                        claim.end,
                        subject.item_id,
                        "in stock" if subject.availability in BUYABLE else "out of stock",
                    )
                )
    result.products_mentioned = mentioned
    result.ok = not result.issues
    return result


def check_named(text: str, items: list[GroundItem], *, mode: str = "correct") -> GroundingResult:
    """``check`` for a text in the shop's own words (a curated answer): only the sentences that name a cited
    product are checked, against that product (a price it states must still be the catalog's, a stock claim
    its availability); the other sentences are the shop's to say ("Delivery to Switzerland costs 9.90 CHF"
    is a figure of no product). The sentences left out are blanked, so that offsets stay the text's."""
    kept = [" "] * len(text)
    for start, end in sentence_spans(text):
        if mentioned_items(text[start:end], items):
            kept[start:end] = text[start:end]
    for i, ch in enumerate(text):
        if ch == "\n":
            kept[i] = "\n"  # sentence ends stay where they were
    return check("".join(kept), items, mode=mode)


def apply(text: str, result: GroundingResult, *, withheld_message: str) -> tuple[str, GroundingResult]:
    """The text the customer gets, and the result with its ``action`` set.

    ``correct`` rewrites wrong prices and stock words in place; an ``unknown_price`` (a product or price
    that no cited row supports) cannot be corrected, so such a reply is withheld. ``withhold`` replaces
    any reply with an issue by ``withheld_message`` (cards carry the catalog facts). ``flag`` keeps the text.
    """
    if result.ok:
        result.action = "none"
        return text, result
    if result.mode == "flag":
        result.action = "flagged"
        return text, result
    correctable = all(issue.expected for issue in result.issues)
    if result.mode == "withhold" or not correctable:
        result.action = "withheld"
        return withheld_message, result
    out = text
    for issue in sorted(result.issues, key=lambda i: -i.start):
        out = out[: issue.start] + issue.expected + out[issue.end :]
    result.action = "corrected"
    return out, result
