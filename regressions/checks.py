"""Does a reply state a case's expected facts? Pure functions of the reply's text and cards.

A price or stock fact must be on the reply's line that names the item (a reply listing three tents must
give this tent's price, not another's); when no line names it, the whole text counts. A fact the text
lacks still passes when the reply's card for that item shows it (a withheld reply shows cards instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.answers import availability_text
from agents.cards import Card
from regressions.models import Expected


@dataclass(frozen=True)
class Verdict:
    passed: bool
    missing: list[str] = field(default_factory=list)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _scope(text: str, title: str) -> str:
    """The lines of ``text`` that name ``title`` (all of it when none does)."""
    wanted = _norm(title.rstrip(". "))
    lines = [line for line in text.splitlines() if wanted and wanted in _norm(line)]
    return "\n".join(lines) if lines else text


def _card_of(cards: list[Card], expected: Expected) -> Card | None:
    external_id = expected.get("external_id")
    return next((c for c in cards if external_id and c["external_id"] == external_id), None)


def check(expected: Expected, *, text: str, cards: list[Card], language: str) -> Verdict:
    """Which of ``expected``'s facts the reply (``text`` and ``cards``) lacks."""
    missing: list[str] = []
    scope = _norm(_scope(text, expected.get("title", "")))
    card = _card_of(cards, expected)
    if "price" in expected:
        money = f"{expected['price']} {expected.get('currency', '')}".strip()
        on_card = card is not None and expected["price"] in (card["sale_price"] or card["price"] or "",)
        if _norm(money) not in scope and not on_card:
            missing.append(f"the price {money}")
    if "stock" in expected:
        words = availability_text(expected["stock"], language)
        # "in stock" is inside "not in stock" in no language we render, but "op voorraad" is inside "niet op
        # voorraad": the phrase must not follow a negation.
        found = re.search(rf"(?<!niet )(?<!nicht )\b{re.escape(_norm(words))}\b", scope) is not None
        on_card = card is not None and card["availability"] == expected["stock"]
        if not found and not on_card:
            missing.append(f"the stock level “{words}”")
    for phrase in expected.get("contains", []):
        if _norm(phrase) not in _norm(text):
            missing.append(f"“{phrase}”")
    for phrase in expected.get("avoid", []):
        if _norm(phrase) in _norm(text):
            missing.append(f"anything but “{phrase}” (marked wrong)")
    return Verdict(passed=not missing, missing=missing)
