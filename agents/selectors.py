"""Reads for the agent: its settings and its curated answers, per business."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from django.db.models import Q, QuerySet
from pgvector.django import CosineDistance

from agents.models import Agent, CuratedAnswer, CuratedPhrasing
from businesses.models import Business
from catalogs.embeddings import embed_query, get_backend

# Cosine similarity of all-MiniLM-L6-v2 above which a customer's question is a curated answer's question
# (docs/agent.md, "Curated answers", has the measurements): rewordings of the same question scored 0.82-0.99,
# different questions in the same words ("Do you repair bikes?" / "Do you sell bikes?", "ship to
# Switzerland" / "ship to Austria") up to 0.75. Looser rewordings (0.35-0.73) are what paraphrases are for.
CURATED_MIN_SIMILARITY = 0.80
# The columns of the CSV import and export; paraphrases are separated by "|" in their cell.
CURATED_CSV_COLUMNS = ("question", "answer", "paraphrases")
PARAPHRASE_SEPARATOR = "|"


def agent_for(business: Business) -> Agent:
    """The business's agent settings, created with the defaults on first use."""
    agent, _ = Agent.objects.get_or_create(
        business=business, defaults={"name": f"{business.name} assistant"[:100]}
    )
    return agent


def curated_answers_list(business: Business, *, query: str = "") -> QuerySet[CuratedAnswer]:
    """The business's curated answers, last changed first; ``query`` narrows them to those whose question,
    paraphrases or answer contain it."""
    rows = CuratedAnswer.objects.filter(business=business)
    query = query.strip()
    if query:
        rows = rows.filter(
            Q(question__icontains=query) | Q(answer__icontains=query) | Q(paraphrases__icontains=query)
        )
    return rows


def curated_answer_of(business: Business, curated_id: int) -> CuratedAnswer | None:
    """The business's curated answer ``curated_id`` (None for another business's or a missing one)."""
    return CuratedAnswer.objects.filter(business=business, pk=curated_id).first()


@dataclass(frozen=True)
class CuratedMatch:
    """A curated answer whose question means what the customer asked."""

    curated_id: int
    question: str
    answer: str
    phrasing: str  # the phrasing that matched (the question or one of its paraphrases)
    similarity: float


def curated_match(
    business: Business | int, question: str, vector: list[float] | None = None
) -> CuratedMatch | None:
    """The active curated answer of ``business`` whose closest phrasing is nearest ``question``, if its
    cosine similarity reaches ``CURATED_MIN_SIMILARITY``; else None.

    ``vector``: the question's embedding, when the caller has it (the reply's retrieval does); without it
    the question is embedded here, and only when the business has a curated answer to compare with. Only
    phrasings embedded by the current backend are compared (another model's vectors mean nothing here).
    """
    business_id = business if isinstance(business, int) else business.pk
    phrasings = CuratedPhrasing.objects.filter(
        business_id=business_id, curated__is_active=True, embedding_model=get_backend().name
    )
    if vector is None:
        if not question.strip() or not phrasings.exists():
            return None
        vector = embed_query(question.strip()[:1000])
    # An exact scan of the tenant's phrasings (a few hundred at most): the business filter is selective.
    best = (
        phrasings.annotate(distance=CosineDistance("embedding", vector))
        .select_related("curated")
        .order_by("distance", "pk")
        .first()
    )
    if best is None:
        return None
    similarity = 1.0 - float(best.distance)
    if similarity < CURATED_MIN_SIMILARITY:
        return None
    return CuratedMatch(
        curated_id=best.curated_id,
        question=best.curated.question,
        answer=best.curated.answer,
        phrasing=best.text,
        similarity=round(similarity, 4),
    )


def curated_answers_csv(business: Business) -> str:
    """The business's curated answers as CSV (question, answer, paraphrases joined by "|"): the import's
    format, so an export edited and imported again updates the same answers."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CURATED_CSV_COLUMNS)
    for row in CuratedAnswer.objects.filter(business=business).order_by("pk"):
        writer.writerow([row.question, row.answer, PARAPHRASE_SEPARATOR.join(row.paraphrases)])
    return out.getvalue()
