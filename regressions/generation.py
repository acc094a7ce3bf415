"""The cases of a business's suite, read from its data (no writes: ``services.cases_regenerate`` stores them).

- price and stock questions for a deterministic sample of ``REGRESSION_SAMPLE_ITEMS`` active items (ordered
  by a hash of their external id: the same items each time, and a growing catalog keeps most of them), in
  English and in each language of the agent's ``languages`` that answers are written in;
- one question per FAQ heading: the heading itself, expecting a distinctive phrase of its passage's first
  sentence (the agent quotes FAQ passages word for word);
- one per active curated answer: its question, expecting its answer's first sentence;
- one per reply the owner marked (``ReplyMark``): a right one's facts as today's data has them (its item's
  price or stock), a wrong one's first sentence as what must not be said again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models.functions import MD5

from agents.models import Agent, CuratedAnswer
from agents.question import language_of
from agents.text import content_stems, sentences
from businesses.models import Business
from catalogs.models import Chunk, Document, Item
from regressions.models import Expected, RegressionCase, ReplyMark

# The languages answers are rendered in (agents.answers), with how a customer asks a price and a stock level.
PRICE_QUESTIONS = {
    "en": "How much is {title}?",
    "de": "Wie viel kostet {title}?",
    "fr": "Combien coûte {title} ?",
    "es": "¿Cuánto cuesta {title}?",
    "it": "Quanto costa {title}?",
    "nl": "Hoeveel kost {title}?",
}
STOCK_QUESTIONS = {
    "en": "Is {title} in stock?",
    "de": "Ist {title} auf Lager?",
    "fr": "Est-ce que {title} est en stock ?",
    "es": "¿Tienen {title} en stock?",
    "it": "Avete {title} disponibile?",
    "nl": "Hebben jullie {title} op voorraad?",
}
# The longest phrase expected of an FAQ answer, in words: short enough to survive a passage quoted in part.
PHRASE_WORDS = 6
# Documents whose headings are questions a customer asks (pages are not).
FAQ_KINDS = (Document.Kind.FAQ, Document.Kind.POLICY)


@dataclass(frozen=True)
class CaseSpec:
    kind: str
    question: str
    expected: Expected
    language: str
    source_key: str
    item_id: int | None = None
    chunk_id: int | None = None
    curated_id: int | None = None
    mark_id: int | None = None


def suite_languages(agent: Agent) -> list[str]:
    """English, then the agent's other languages that answers are written in, in its order."""
    chosen = ["en"]
    for raw in agent.languages or []:
        language = str(raw).strip().lower()[:2]
        if language in PRICE_QUESTIONS and language not in chosen:
            chosen.append(language)
    return chosen


def sample_items(business: Business, *, size: int | None = None) -> list[Item]:
    """``size`` active items (default ``REGRESSION_SAMPLE_ITEMS``), the same ones on every call."""
    size = size or settings.REGRESSION_SAMPLE_ITEMS
    return list(
        Item.objects.filter(business=business, is_active=True)
        .annotate(sample_key=MD5("external_id"))
        .order_by("sample_key", "pk")[:size]
    )


def _price(item: Item) -> Decimal | None:
    # What the answer shows (agents.grounding.GroundItem.effective_price): the sale price when there is one.
    return item.sale_price if item.sale_price is not None else item.price


def item_cases(item: Item, languages: list[str]) -> list[CaseSpec]:
    title = " ".join(item.title.split())
    cases: list[CaseSpec] = []
    base: Expected = {"title": title, "external_id": item.external_id}
    for language in languages:
        price = _price(item)
        if price is not None:
            question = PRICE_QUESTIONS[language].format(title=title)
            cases.append(
                CaseSpec(
                    kind=RegressionCase.Kind.PRICE,
                    question=question,
                    expected={**base, "price": f"{price:.2f}", "currency": item.currency},
                    # The language the agent will answer in (a title's own words can tip a short question).
                    language=language_of(question),
                    source_key=f"item:{item.external_id}",
                    item_id=item.pk,
                )
            )
        if item.availability:
            question = STOCK_QUESTIONS[language].format(title=title)
            cases.append(
                CaseSpec(
                    kind=RegressionCase.Kind.STOCK,
                    question=question,
                    expected={**base, "stock": item.availability},
                    language=language_of(question),
                    source_key=f"item:{item.external_id}",
                    item_id=item.pk,
                )
            )
    return cases


def distinctive_phrase(sentence: str, *, words: int = PHRASE_WORDS) -> str:
    """The run of up to ``words`` words of ``sentence`` holding the most content words and figures (the
    first such run), without its closing punctuation: what a reply quoting the sentence must contain."""
    tokens = sentence.split()
    if len(tokens) <= words:
        return sentence.strip().rstrip(".!?:;,")

    def weight(run: list[str]) -> int:
        text = " ".join(run)
        return len(content_stems(text)) * 2 + len(re.findall(r"\d+", text))

    starts = range(len(tokens) - words + 1)
    best = max(starts, key=lambda i: (weight(tokens[i : i + words]), -i))
    return " ".join(tokens[best : best + words]).rstrip(".!?:;,")


def faq_cases(business: Business) -> list[CaseSpec]:
    """One case per distinct FAQ heading (its first chunk's first sentence)."""
    chunks = (
        Chunk.objects.filter(business=business, document__is_active=True, document__kind__in=FAQ_KINDS)
        .exclude(heading="")
        .order_by("document_id", "ordinal")
        .only("pk", "heading", "text")
    )
    seen: set[str] = set()
    cases: list[CaseSpec] = []
    for chunk in chunks:
        heading = " ".join(chunk.heading.split(" > ")[-1].split())
        first = next(iter(sentences(chunk.text)), "")
        if not heading or not first or heading.lower() in seen:
            continue
        seen.add(heading.lower())
        cases.append(
            CaseSpec(
                kind=RegressionCase.Kind.FAQ,
                question=heading,
                expected={"contains": [distinctive_phrase(first)]},
                language=language_of(f"{heading} {first}"),
                source_key=f"faq:{heading.lower()}"[:600],
                chunk_id=chunk.pk,
            )
        )
    return cases


def curated_cases(business: Business) -> list[CaseSpec]:
    cases: list[CaseSpec] = []
    for curated in CuratedAnswer.objects.filter(business=business, is_active=True).order_by("pk"):
        first = next(iter(sentences(curated.answer)), curated.answer.strip())
        cases.append(
            CaseSpec(
                kind=RegressionCase.Kind.CURATED,
                question=curated.question,
                expected={"contains": [first]},
                language=language_of(curated.question),
                source_key=f"curated:{curated.pk}",
                curated_id=curated.pk,
            )
        )
    return cases


def _marked_expected(mark: ReplyMark, items: dict[str, Item]) -> Expected | None:
    """What a reply to the marked question must state (None: nothing left to expect, the item is gone)."""
    first = next(iter(sentences(mark.reply_text)), mark.reply_text.strip())
    if mark.verdict == ReplyMark.Verdict.BAD:
        return {"avoid": [first]} if first else None
    item = next((items[e] for e in mark.external_ids if e in items), None)
    if mark.external_ids and item is None:
        return None  # its product was retired: the right answer of then is no longer right
    if item is None:
        return {"contains": [distinctive_phrase(first)]} if first else None
    title = " ".join(item.title.split())
    expected: Expected = {"title": title, "external_id": item.external_id}
    price = _price(item)
    if mark.answer_kind == "price" and price is not None:
        expected["price"], expected["currency"] = f"{price:.2f}", item.currency
    elif mark.answer_kind == "stock" and item.availability:
        expected["stock"] = item.availability
    else:
        expected["contains"] = [title]
    return expected


def marked_cases(business: Business) -> list[CaseSpec]:
    marks = list(ReplyMark.objects.filter(business=business).order_by("pk"))
    wanted = {e for mark in marks for e in mark.external_ids}
    items = {
        item.external_id: item
        for item in Item.objects.filter(business=business, is_active=True, external_id__in=wanted)
    }
    cases: list[CaseSpec] = []
    for mark in marks:
        expected = _marked_expected(mark, items)
        if expected is None:
            continue
        item = items.get(expected.get("external_id", ""))
        cases.append(
            CaseSpec(
                kind=RegressionCase.Kind.MARKED,
                question=mark.question,
                expected=expected,
                language=language_of(mark.question),
                source_key=f"mark:{mark.pk}",
                item_id=item.pk if item else None,
                mark_id=mark.pk,
            )
        )
    return cases


def generate(business: Business, agent: Agent) -> list[CaseSpec]:
    languages = suite_languages(agent)
    specs = [case for item in sample_items(business) for case in item_cases(item, languages)]
    return specs + faq_cases(business) + curated_cases(business) + marked_cases(business)
