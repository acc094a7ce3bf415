"""REST API v1 of the agent's settings and the analytics summaries (docs/api.md).

``PATCH /agent/settings`` changes some settings as the admin's form does: the values are checked by its form
(``dashboard.forms.AgentForm``, over the draft, or the published settings, with the patch laid on top) and
saved as the agent's **draft** by the same service (``dashboard.services.agent_settings_draft``, which runs the
regression suite on it). ``POST /agent/settings/publish`` makes the draft what customers get, unless the suite
holds it back (409); ``DELETE /agent/settings/draft`` drops it. Reading needs the ``read`` scope, changing
``write``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Field, Query, Schema

from agents.models import Agent
from agents.selectors import agent_for
from agents.services import agent_draft_discard
from businesses.api_auth import READ, WRITE, api_business
from common.idempotency import IdempotentRouter
from common.problems import Problem, field_errors
from dashboard import analytics_selectors
from dashboard.forms import AgentForm
from dashboard.services import agent_settings_draft
from regressions import gate

router = IdempotentRouter(tags=["agent"])

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
LIST_SETTINGS = ("forbidden_topics", "handoff_keywords", "handoff_topics")


class RegressionOut(Schema):
    question: str
    expected: dict[str, Any]
    reply: str


class DraftCheckOut(Schema):
    """Where the draft stands with the regression suite (docs/admin.md, "Draft and publish")."""

    state: Literal["none", "unchecked", "running", "failed", "regressed", "passed"]
    may_publish: bool
    publish_requires_suite: bool
    run_id: int | None
    regressions: list[RegressionOut]


class AgentSettingsOut(Schema):
    name: str
    greeting: str
    instructions: str
    business_facts: str
    tone: str
    languages: list[str]
    answer_in_customer_language: bool
    temperature: float
    max_reply_tokens: int
    no_results_message: str
    forbidden_topics: list[str]
    handoff_keywords: list[str]
    handoff_topics: list[str]
    handoff_after_failures: int
    handoff_message: str
    grounding_mode: str
    out_of_hours_message: str
    business_hours: dict[str, list[list[str]]] = Field(
        description='Opening hours per day in the business\'s time zone, {"mon": [["09:00", "18:00"]]}'
    )
    updated_at: datetime
    published_at: datetime | None = Field(description="When a draft was last published")
    draft: dict[str, Any] = Field(
        description="The changed settings not yet published (the playground answers with them); {} when none"
    )
    draft_check: DraftCheckOut


class AgentSettingsPatch(Schema):
    """The settings to change; those left out keep their values. Checked as the admin's form checks them."""

    name: str | None = None
    greeting: str | None = None
    instructions: str | None = None
    business_facts: str | None = None
    tone: str | None = None
    languages: list[str] | None = Field(None, max_length=50)
    answer_in_customer_language: bool | None = None
    temperature: float | None = None
    max_reply_tokens: int | None = None
    no_results_message: str | None = None
    forbidden_topics: list[str] | None = Field(None, max_length=200)
    handoff_keywords: list[str] | None = Field(None, max_length=200)
    handoff_topics: list[str] | None = Field(None, max_length=200)
    handoff_after_failures: int | None = None
    handoff_message: str | None = None
    grounding_mode: Agent.Grounding | None = None
    out_of_hours_message: str | None = None
    business_hours: dict[Day, list[tuple[str, str]]] | None = Field(
        None, description="Days left out keep their hours; an empty list closes that day"
    )


def _form_data(agent: Agent, patch: AgentSettingsPatch) -> dict[str, Any]:
    """The admin form's fields for the draft (or the published settings) with the patch laid on top, in the
    form's own shapes (lists as lines, hours as "09:00-12:00, 13:00-18:00")."""
    data = AgentForm.initial_from(agent.with_draft())
    for name, value in patch.dict(exclude_unset=True, exclude={"business_hours"}).items():
        if value is None:
            continue
        if name in LIST_SETTINGS:
            data[name] = "\n".join(value)
        elif name == "languages":
            data[name] = ", ".join(value)
        else:
            data[name] = value
    for day, ranges in (patch.business_hours or {}).items():
        data[f"hours_{day}"] = ", ".join(f"{start}-{end}" for start, end in ranges)
    return data


def _form_field(name: str) -> str:
    return f"business_hours.{name.removeprefix('hours_')}" if name.startswith("hours_") else name


def _settings_out(agent: Agent) -> dict[str, Any]:
    """The published settings, the draft, and the suite's verdict on it."""
    check = gate.draft_check(agent.business)
    out = {name: getattr(agent, name) for name in AgentSettingsOut.model_fields if hasattr(agent, name)}
    out["draft_check"] = {
        "state": check.state,
        "may_publish": check.may_publish,
        "publish_requires_suite": check.gated,
        "run_id": check.run.pk if check.run else None,
        "regressions": [
            {"question": row.result.question, "expected": row.result.expected, "reply": row.result.reply_text}
            for row in (check.report.regressions if check.report else [])
        ],
    }
    return out


@router.get("/agent/settings", response=AgentSettingsOut, auth=READ, summary="The agent's settings")
def agent_settings_get(request: HttpRequest) -> dict[str, Any]:
    return _settings_out(agent_for(api_business(request)))


@router.post(
    "/agent/settings/publish",
    response=AgentSettingsOut,
    auth=WRITE,
    summary="Publish the draft (409 while the regression suite holds it back)",
)
def agent_settings_publish(request: HttpRequest) -> dict[str, Any]:
    business = api_business(request)
    try:
        gate.draft_publish(business)
    except gate.PublishBlocked as exc:
        raise Problem(409, str(exc), code="publish_blocked") from exc
    return _settings_out(agent_for(business))


@router.delete("/agent/settings/draft", response=AgentSettingsOut, auth=WRITE, summary="Drop the draft")
def agent_settings_draft_delete(request: HttpRequest) -> dict[str, Any]:
    business = api_business(request)
    agent_draft_discard(business)
    return _settings_out(agent_for(business))


@router.patch(
    "/agent/settings",
    response=AgentSettingsOut,
    auth=WRITE,
    summary="Change some of the agent's settings, as a draft (the regression suite runs on it)",
)
def agent_settings_patch(request: HttpRequest, payload: AgentSettingsPatch) -> dict[str, Any]:
    business = api_business(request)
    form = AgentForm(_form_data(agent_for(business), payload))
    if not form.is_valid():
        errors = {_form_field(name): messages for name, messages in form.errors.items()}
        raise Problem(
            422,
            "the settings are not valid",
            code="validation_failed",
            errors=field_errors(errors, prefix="body"),
        )
    try:
        return _settings_out(agent_settings_draft(business, **form.cleaned_data).agent)
    except ValidationError as exc:
        raise Problem(
            422,
            "the settings are not valid",
            code="validation_failed",
            errors=field_errors(exc.message_dict, prefix="body"),
        ) from exc


class DayCount(Schema):
    day: date
    conversations: int
    messages: int


class ReasonCount(Schema):
    reason: str
    count: int


class ProductCount(Schema):
    item_id: int
    external_id: str
    title: str
    citations: int


class UnansweredQuestion(Schema):
    question: str
    asked_at: datetime


class AnalyticsOut(Schema):
    """The analytics page's figures over the last ``days`` days, in the business's time zone."""

    days: int
    per_day: list[DayCount]
    conversations: int
    answered_without_human: float | None = Field(description="Share of conversations with no handoff")
    handoffs: int
    handoff_reasons: list[ReasonCount]
    ttft_p50_ms: float | None = Field(description="Time to the reply's first token, median")
    ttft_p95_ms: float | None
    replies_measured: int
    grounding_flagged: int = Field(description="Replies whose facts the last check found wrong")
    grounding_flags: list[ReasonCount]
    unanswered: list[UnansweredQuestion] = Field(description="Questions whose reply cited nothing")
    top_products: list[ProductCount]
    thumbs_up: int
    thumbs_down: int
    csat_average: float | None = Field(description="The mean 1-5 answer to 'How did we do?'")
    csat_answers: int


class AnalyticsQuery(Schema):
    days: int = Field(30, ge=1, le=365)


@router.get("/analytics", response=AnalyticsOut, auth=READ, tags=["analytics"], summary="Analytics summary")
def analytics_get(request: HttpRequest, query: Query[AnalyticsQuery]) -> dict[str, Any]:
    data = analytics_selectors.analytics(api_business(request), days=query.days)
    return {
        "days": query.days,
        "per_day": [
            {"day": day, "conversations": conversations, "messages": messages}
            for day, conversations, messages in zip(
                data.days, data.conversations_per_day, data.messages_per_day, strict=True
            )
        ],
        "conversations": data.conversations,
        "answered_without_human": data.answered_without_human,
        "handoffs": data.handoffs,
        "handoff_reasons": [{"reason": r, "count": n} for r, n in data.handoff_reasons],
        "ttft_p50_ms": data.ttft_p50_ms,
        "ttft_p95_ms": data.ttft_p95_ms,
        "replies_measured": data.replies_measured,
        "grounding_flagged": data.grounding_flagged,
        "grounding_flags": [{"reason": r, "count": n} for r, n in data.grounding_flags],
        "unanswered": [{"question": q, "asked_at": at} for q, at in data.unanswered],
        "top_products": [
            {"item_id": item.pk, "external_id": item.external_id, "title": item.title, "citations": n}
            for item, n in data.top_products
        ],
        "thumbs_up": data.thumbs_up,
        "thumbs_down": data.thumbs_down,
        "csat_average": data.csat_average,
        "csat_answers": data.csat_answers,
    }
