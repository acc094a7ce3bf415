"""REST API v1 of curated answers (docs/api.md): the right answer to a question, written by the business,
which the agent gives verbatim when a customer asks the same (``agents.selectors.curated_match``).

Reads need the ``read`` scope, changes ``write``; another business's answer is a 404, like a missing one.
The writes are the admin's (``agents.services``): the same checks, the phrasings embedded again when they
change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Field, Query, Schema, Status

from agents import selectors
from agents.models import CuratedAnswer
from agents.services import (
    ANSWER_MAX,
    PARAPHRASES_MAX,
    QUESTION_MAX,
    CuratedAnswerInvalid,
    curated_answer_create,
    curated_answer_delete,
    curated_answer_update,
)
from businesses.api_auth import READ, WRITE, api_business
from common.idempotency import IdempotentRouter
from common.pagination import cursor_paginated
from common.problems import Problem

router = IdempotentRouter(tags=["curated answers"])


class CuratedAnswerOut(Schema):
    id: int
    question: str
    paraphrases: list[str]
    answer: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class CuratedAnswerIn(Schema):
    question: str = Field(min_length=1, max_length=QUESTION_MAX)
    paraphrases: list[str] = Field(
        default_factory=list, max_length=PARAPHRASES_MAX * 2, description="Other ways customers ask it"
    )
    answer: str = Field(min_length=1, max_length=ANSWER_MAX)
    is_active: bool = True


class CuratedFilters(Schema):
    q: str = Field("", max_length=200, description="A substring of the question, a paraphrase or the answer")


def _curated(request: HttpRequest, curated_id: int) -> CuratedAnswer:
    curated = selectors.curated_answer_of(api_business(request), curated_id)
    if curated is None:
        raise Http404
    return curated


def _invalid(exc: CuratedAnswerInvalid) -> Problem:
    return Problem(422, str(exc), code="validation_failed")


@router.get("/curated-answers", response=list[CuratedAnswerOut], auth=READ, summary="List curated answers")
@cursor_paginated
def curated_list(request: HttpRequest, filters: Query[CuratedFilters]) -> Any:
    return selectors.curated_answers_list(api_business(request), query=filters.q).order_by("-pk")


@router.get(
    "/curated-answers/{int:curated_id}", response=CuratedAnswerOut, auth=READ, summary="Get a curated answer"
)
def curated_get(request: HttpRequest, curated_id: int) -> CuratedAnswer:
    return _curated(request, curated_id)


@router.post(
    "/curated-answers", response={201: CuratedAnswerOut}, auth=WRITE, summary="Create a curated answer"
)
def curated_create(request: HttpRequest, payload: CuratedAnswerIn) -> Status[CuratedAnswer]:
    try:
        curated = curated_answer_create(
            business=api_business(request),
            question=payload.question,
            answer=payload.answer,
            paraphrases=payload.paraphrases,
            is_active=payload.is_active,
        )
    except CuratedAnswerInvalid as exc:
        raise _invalid(exc) from exc
    return Status(201, curated)


@router.put(
    "/curated-answers/{int:curated_id}",
    response=CuratedAnswerOut,
    auth=WRITE,
    summary="Replace a curated answer",
)
def curated_update(request: HttpRequest, curated_id: int, payload: CuratedAnswerIn) -> CuratedAnswer:
    try:
        return curated_answer_update(
            curated=_curated(request, curated_id),
            question=payload.question,
            answer=payload.answer,
            paraphrases=payload.paraphrases,
            is_active=payload.is_active,
        )
    except CuratedAnswerInvalid as exc:
        raise _invalid(exc) from exc


@router.delete(
    "/curated-answers/{int:curated_id}", response={204: None}, auth=WRITE, summary="Delete a curated answer"
)
def curated_delete(request: HttpRequest, curated_id: int) -> Status[None]:
    curated_answer_delete(curated=_curated(request, curated_id))
    return Status(204, None)
