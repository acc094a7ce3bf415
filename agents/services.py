"""Writes for the agent: its settings and its curated answers. Every function takes the business first."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agents.models import DRAFTED_FIELDS, Agent, CuratedAnswer, CuratedPhrasing
from agents.selectors import CURATED_CSV_COLUMNS, PARAPHRASE_SEPARATOR, agent_for
from businesses.models import Business
from catalogs.embeddings import get_backend

QUESTION_MAX = 500
ANSWER_MAX = 4000
PARAPHRASES_MAX = 20
CSV_MAX_BYTES = 2 * 1024 * 1024
CSV_MAX_ROWS = 2000


def agent_update(business: Business, **fields: Any) -> Agent:
    """Change some of the business's agent settings (validated as a whole before saving)."""
    with transaction.atomic():
        agent = agent_for(business)
        unknown = set(fields) - {f.name for f in Agent._meta.get_fields()} | {
            "id",
            "business",
            "business_id",
        } & set(fields)
        if unknown:
            raise ValueError(f"not agent settings: {sorted(unknown)}")
        for name, value in fields.items():
            setattr(agent, name, value)
        agent.full_clean()
        agent.save()
    return agent


def _locked_agent(business: Business) -> Agent:
    return Agent.objects.select_for_update().get(pk=agent_for(business).pk)


def agent_draft_save(business: Business, **fields: Any) -> Agent:
    """Store changed settings as the agent's draft, not yet what customers get: validated as a whole with
    the published settings, and only what differs from them is kept (a field set back to its published value
    leaves the draft; a draft that changes nothing is no draft)."""
    unknown = set(fields) - DRAFTED_FIELDS
    if unknown:
        raise ValueError(f"not drafted agent settings: {sorted(unknown)}")
    with transaction.atomic():
        agent = _locked_agent(business)
        drafted = agent.with_draft({**agent.draft, **fields})
        drafted.full_clean()
        agent.draft = {
            name: getattr(drafted, name)
            for name in sorted(DRAFTED_FIELDS)
            if getattr(drafted, name) != getattr(agent, name)
        }
        agent.draft_saved_at = timezone.now() if agent.draft else None
        agent.save(update_fields=["draft", "draft_saved_at", "updated_at"])
    return agent


def agent_publish(business: Business) -> tuple[Agent, list[str]]:
    """Make the draft what customers get; returns the agent and the names of the fields that changed
    (none without a draft). Whether the draft may be published is the regression suite's say
    (``regressions.gate``), not this function's."""
    with transaction.atomic():
        agent = _locked_agent(business)
        changed = sorted(agent.draft)
        if not changed:
            return agent, []
        published = agent.with_draft()
        published.full_clean()
        published.draft, published.draft_saved_at, published.published_at = {}, None, timezone.now()
        published.save()
    return published, changed


def agent_draft_discard(business: Business) -> Agent:
    """Drop the draft: the playground answers with the published settings again."""
    with transaction.atomic():
        agent = _locked_agent(business)
        agent.draft, agent.draft_saved_at = {}, None
        agent.save(update_fields=["draft", "draft_saved_at", "updated_at"])
    return agent


class CuratedAnswerInvalid(ValueError):
    """A curated answer that cannot be stored: the message says what to fix."""


@dataclass(frozen=True)
class CuratedFields:
    question: str
    answer: str
    paraphrases: list[str]


def curated_fields(*, question: str, answer: str, paraphrases: Sequence[str] = ()) -> CuratedFields:
    """The fields cleaned (trimmed; empty and repeated paraphrases dropped), or ``CuratedAnswerInvalid``."""
    question = " ".join(question.split())
    answer = answer.strip()
    if not question:
        raise CuratedAnswerInvalid("The question is empty.")
    if len(question) > QUESTION_MAX:
        raise CuratedAnswerInvalid(f"The question is longer than {QUESTION_MAX} characters.")
    if not answer:
        raise CuratedAnswerInvalid("The answer is empty.")
    if len(answer) > ANSWER_MAX:
        raise CuratedAnswerInvalid(f"The answer is longer than {ANSWER_MAX} characters.")
    seen = {question.lower()}
    cleaned: list[str] = []
    for raw in paraphrases:
        text = " ".join(raw.split())
        if not text or text.lower() in seen:
            continue
        if len(text) > QUESTION_MAX:
            raise CuratedAnswerInvalid(f"A paraphrase is longer than {QUESTION_MAX} characters.")
        seen.add(text.lower())
        cleaned.append(text)
    if len(cleaned) > PARAPHRASES_MAX:
        raise CuratedAnswerInvalid(f"More than {PARAPHRASES_MAX} paraphrases.")
    return CuratedFields(question=question, answer=answer, paraphrases=cleaned)


def _embedded(texts: list[str]) -> tuple[list[list[float]], str]:
    # Called before any transaction opens: the model (or the pool) never runs inside one.
    backend = get_backend()
    return backend.embed(texts), backend.name


def _phrasings(curated: CuratedAnswer, vectors: list[list[float]], model_name: str) -> list[CuratedPhrasing]:
    return [
        CuratedPhrasing(
            business_id=curated.business_id,
            curated=curated,
            text=text,
            embedding=vector,
            embedding_model=model_name,
        )
        for text, vector in zip(curated.phrasings(), vectors, strict=True)
    ]


def curated_answer_create(
    *,
    business: Business,
    question: str,
    answer: str,
    paraphrases: Sequence[str] = (),
    created_by: AbstractBaseUser | None = None,
    source_message_id: int | None = None,
    is_active: bool = True,
) -> CuratedAnswer:
    """Store the right answer to ``question`` (and its paraphrases, each embedded). ``source_message_id``:
    the agent reply it corrects, which must be one of this business's messages."""
    fields = curated_fields(question=question, answer=answer, paraphrases=paraphrases)
    source_model = CuratedAnswer._meta.get_field("source_message").related_model
    assert source_model is not None and not isinstance(source_model, str)
    if (
        source_message_id is not None
        and not source_model._default_manager.filter(business=business, pk=source_message_id).exists()
    ):
        raise CuratedAnswerInvalid("The reply to correct is not one of this business's messages.")
    curated = CuratedAnswer(
        business=business,
        question=fields.question,
        paraphrases=fields.paraphrases,
        answer=fields.answer,
        created_by_id=created_by.pk if created_by is not None else None,
        source_message_id=source_message_id,
        is_active=is_active,
    )
    vectors, model_name = _embedded(curated.phrasings())
    with transaction.atomic(durable=True):
        curated.save()
        CuratedPhrasing.objects.bulk_create(_phrasings(curated, vectors, model_name))
    return curated


def curated_answer_update(
    *,
    curated: CuratedAnswer,
    question: str,
    answer: str,
    paraphrases: Sequence[str] = (),
    is_active: bool = True,
) -> CuratedAnswer:
    """Change a curated answer; its phrasings are embedded again only when the question or the
    paraphrases changed."""
    fields = curated_fields(question=question, answer=answer, paraphrases=paraphrases)
    rephrased = fields.question != curated.question or fields.paraphrases != curated.paraphrases
    curated.question, curated.paraphrases = fields.question, fields.paraphrases
    curated.answer, curated.is_active = fields.answer, is_active
    vectors, model_name = _embedded(curated.phrasings()) if rephrased else ([], "")
    with transaction.atomic(durable=True):
        curated.save(update_fields=["question", "paraphrases", "answer", "is_active", "updated_at"])
        if rephrased:
            CuratedPhrasing.objects.filter(curated=curated).delete()
            CuratedPhrasing.objects.bulk_create(_phrasings(curated, vectors, model_name))
    return curated


def curated_answer_delete(*, curated: CuratedAnswer) -> None:
    """Remove a curated answer and its phrasings: the agent stops using it at once."""
    with transaction.atomic(durable=True):
        curated.delete()


class CuratedRowError(TypedDict):
    """A CSV row that was not imported: its line in the file and why."""

    row: int
    reason: str


@dataclass
class CuratedImportResult:
    created: int = 0
    updated: int = 0
    errors: list[CuratedRowError] = field(default_factory=list)


def curated_answers_import(
    *, business: Business, data: bytes, created_by: AbstractBaseUser | None = None
) -> CuratedImportResult:
    """Import curated answers from CSV (columns ``question``, ``answer`` and optionally ``paraphrases``,
    separated by "|"). Good rows are kept, bad ones reported by line; a row whose question the business
    already has (in any case) updates that answer, so an edited export imports back in place. A file that
    cannot be read at all raises ``CuratedAnswerInvalid``."""
    if len(data) > CSV_MAX_BYTES:
        raise CuratedAnswerInvalid(f"The file is larger than {CSV_MAX_BYTES // (1024 * 1024)} MB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CuratedAnswerInvalid("The file is not UTF-8 text.") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in CURATED_CSV_COLUMNS[:2] if c not in header]
    if missing:
        raise CuratedAnswerInvalid(
            f"The file has no {' or '.join(missing)} column (expected: {', '.join(CURATED_CSV_COLUMNS)})."
        )
    reader.fieldnames = header
    result = CuratedImportResult()
    good: dict[str, CuratedFields] = {}
    for raw in reader:
        line = reader.line_num
        if len(good) + len(result.errors) >= CSV_MAX_ROWS:
            raise CuratedAnswerInvalid(f"The file has more than {CSV_MAX_ROWS} rows.")
        if None in raw:
            result.errors.append({"row": line, "reason": "more cells than columns"})
            continue
        paraphrases = (raw.get("paraphrases") or "").split(PARAPHRASE_SEPARATOR)
        try:
            fields = curated_fields(
                question=raw.get("question") or "", answer=raw.get("answer") or "", paraphrases=paraphrases
            )
        except CuratedAnswerInvalid as exc:
            result.errors.append({"row": line, "reason": str(exc)})
            continue
        if fields.question.lower() in good:
            result.errors.append({"row": line, "reason": "the same question as an earlier row"})
            continue
        good[fields.question.lower()] = fields
    if not good:
        return result

    existing = {
        c.question.lower(): c
        for c in CuratedAnswer.objects.filter(business=business)
        if c.question.lower() in good
    }
    rows: list[CuratedAnswer] = []
    for key, fields in good.items():
        curated = existing.get(key) or CuratedAnswer(
            business=business, created_by_id=created_by.pk if created_by is not None else None
        )
        curated.question, curated.answer, curated.paraphrases = (
            fields.question,
            fields.answer,
            fields.paraphrases,
        )
        rows.append(curated)
    texts = [t for c in rows for t in c.phrasings()]
    vectors, model_name = _embedded(texts)
    with transaction.atomic(durable=True):
        offset = 0
        for curated in rows:
            created = curated.pk is None
            curated.save()
            count = len(curated.phrasings())
            if not created:
                CuratedPhrasing.objects.filter(curated=curated).delete()
            CuratedPhrasing.objects.bulk_create(
                _phrasings(curated, vectors[offset : offset + count], model_name)
            )
            offset += count
            if created:
                result.created += 1
            else:
                result.updated += 1
    return result


def curated_reembed_stale(*, business_id: int) -> int:
    """Embed again the phrasings of this business's curated answers that another model embedded (after a
    change of ``EMBEDDINGS_BACKEND`` / ``EMBEDDINGS_MODEL``: ``curated_match`` compares only the current
    model's vectors, so until then those answers are not found). Idempotent; the model runs outside any
    transaction. Returns how many phrasings were embedded."""
    name = get_backend().name
    stale = list(
        CuratedPhrasing.objects.filter(business_id=business_id).exclude(embedding_model=name).order_by("pk")
    )
    if not stale:
        return 0
    vectors, model_name = _embedded([p.text for p in stale])
    for phrasing, vector in zip(stale, vectors, strict=True):
        phrasing.embedding, phrasing.embedding_model = vector, model_name
    with transaction.atomic(durable=True):
        CuratedPhrasing.objects.bulk_update(stale, ["embedding", "embedding_model"])
    return len(stale)
