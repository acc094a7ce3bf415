"""Unanswered questions: what customers asked that the agent did not answer well, grouped by meaning, each
group one click from a fix."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard import unanswered_selectors
from dashboard.permissions import BusinessRequest, member_view
from dashboard.unanswered_selectors import UnansweredGroup

PERIODS = (7, 30, 90)


@dataclass(frozen=True)
class GroupRow:
    group: UnansweredGroup
    curated_url: str  # the curated answer form, pre-filled with the group's question
    search_url: str  # "What would the agent find?" for the question: is the catalog missing it?


def _row(slug: str, group: UnansweredGroup) -> GroupRow:
    question = group.question
    return GroupRow(
        group=group,
        curated_url=f"{reverse('dashboard:curated_answer_new', kwargs={'slug': slug})}?"
        + urlencode({"question": question}),
        search_url=f"{reverse('dashboard:catalog_search', kwargs={'slug': slug})}?"
        + urlencode({"q": question}),
    )


@member_view("owner")
@require_GET
def unanswered(request: BusinessRequest) -> HttpResponse:
    business = request.business
    raw = request.GET.get("days", "30")
    days = int(raw) if raw.isdigit() and int(raw) in PERIODS else 30
    data = unanswered_selectors.unanswered(business, days=days)
    return render(
        request,
        "dashboard/unanswered.html",
        {
            "u": data,
            "rows": [_row(business.slug, g) for g in data.groups],
            "days": days,
            "periods": PERIODS,
            "max_questions": unanswered_selectors.MAX_QUESTIONS,
        },
    )
