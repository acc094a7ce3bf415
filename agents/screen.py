"""The screen: whether a sentence the model adds to a composed answer (``agents.answers``) may be shown.

Only what is verified passes: the catalog facts (``agents.grounding.check``), the shop's policies
(``agents.policy_claims``), the numbers the data holds; never the prompt, another product or a hedge.
Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents import text as words_
from agents.grounding import GroundItem, check, mentioned_items
from agents.policy_claims import contradicted_passage

# Markers of the prompt's own structure: a sentence holding one is the prompt leaking, whatever it says.
_INTERNAL_MARKERS = re.compile(
    r"<<<|>>>|catalog data|\[(?:item|doc|chunk|facts):|business facts|system prompt|my instructions|"
    r"(?:the|these) instructions",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# A small model hedges ("I'm sorry, I don't have access to product information"): next to an answer from the
# data that is noise at best, and reads as if the answer were not there.
_HEDGE = re.compile(
    r"\b(?:sorry|apologi[sz]e|unfortunately|as an ai|language model|i (?:do not|don't) have (?:access|information)|"
    r"i (?:can ?not|can't|am unable to|'m unable to|am not able to)|leider|entschuldig\w*|désolé)\b",
    re.IGNORECASE,
)
# Words that promise money or a deal: shown only when the answer or the shop's policies say so too (not a
# description: a poisoned feed may say "everything is free").
_OFFER = re.compile(
    r"\b(?:free|gratis|kostenlos|umsonst|gratuit|discount\w*|rabatt\w*|coupon\w*|voucher\w*|promo\w*|"
    r"deal|deals|refund\w*|money back|guarantee\w*|warrant\w*)\b|%",
    re.IGNORECASE,
)
ECHO_WORDS = 6


def _shingles(text: str, size: int = ECHO_WORDS) -> set[tuple[str, ...]]:
    tokens = words_.words(text)
    return {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", ".").rstrip("0").rstrip(".") or "0" for n in _NUMBER.findall(text)}


@dataclass(frozen=True)
class Screen:
    """What a model's sentence is checked against before a customer may see it."""

    items: list[GroundItem]  # the rows the answer is about
    cited: list[GroundItem]  # every retrieved row (a sentence naming another one is off the answer)
    passages: list[str]  # the FAQ passages and business facts retrieved
    descriptions: list[str]  # the answer's rows' descriptions: their figures may be repeated
    answer: str  # the composed answer already shown
    private: str  # the system instructions and business facts: never recited


def screen(sentence: str, context: Screen) -> str | None:
    """Why the model's ``sentence`` may not be shown (None: it may). Only what is verified passes: a price
    of the answer's rows, a stock word that matches them, numbers that the data holds, a policy sentence
    that agrees with the passage, no other product, nothing of the prompt, nothing the answer said already."""
    if _INTERNAL_MARKERS.search(sentence):
        return "internals"
    if _HEDGE.search(sentence):
        return "hedge"
    if _shingles(sentence) & _shingles(context.private):
        return "recites the instructions"
    result = check(sentence, context.items)
    if result.issues or (result.prices_checked and not context.items):
        return result.issues[0].kind if result.issues else "unknown_price"
    named = mentioned_items(sentence, context.cited)
    if any(item.item_id not in {i.item_id for i in context.items} for item in named):
        return "another product"
    known = _numbers(context.answer) | {n for p in context.passages for n in _numbers(p)}
    known |= {
        n for text in [*context.descriptions, *(i.title for i in context.items)] for n in _numbers(text)
    }
    if _numbers(sentence) - known:
        return "unverified number"
    sources = " ".join([context.answer, *context.passages])
    offers = {m.group(0).lower() for m in _OFFER.finditer(sentence)}
    if any(not re.search(rf"(?<!\w){re.escape(offer)}(?!\w)", sources, re.IGNORECASE) for offer in offers):
        return "unverified offer"
    if contradicted_passage(sentence, context.passages) is not None:
        return "wrong_policy"
    stems = words_.content_stems(sentence)
    if stems and len(stems & words_.content_stems(context.answer)) >= 0.7 * len(stems):
        return "repeats the answer"
    return None
