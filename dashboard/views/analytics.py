"""Analytics: is the agent answering, how fast, how often it needs a human, and what people ask about."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard import analytics_selectors, charts
from dashboard.permissions import BusinessRequest, member_view

PERIODS = (7, 30, 90)


@member_view("owner")
@require_GET
def analytics(request: BusinessRequest) -> HttpResponse:
    business = request.business
    raw = request.GET.get("days", "30")
    days = int(raw) if raw.isdigit() and int(raw) in PERIODS else 30
    data = analytics_selectors.analytics(business, days=days)
    labels = [d.strftime("%d %b") for d in data.days]
    every = max(len(labels) // 10, 1)
    return render(
        request,
        "dashboard/analytics.html",
        {
            "a": data,
            "days": days,
            "periods": PERIODS,
            "chart_volume": charts.bar_chart(
                labels,
                [("conversations", data.conversations_per_day), ("messages", data.messages_per_day)],
                title="Conversations and messages per day",
                label_every=every,
            ),
            "chart_reasons": charts.hbar_chart(data.handoff_reasons, title="Handoffs by reason"),
            "chart_flags": charts.hbar_chart(data.grounding_flags, title="Grounding flags by kind"),
            "chart_products": charts.hbar_chart(
                [(item.title, n) for item, n in data.top_products], title="Most asked-about products"
            ),
            "chart_ttft": charts.hbar_chart(
                [("p50", data.ttft_p50_ms or 0), ("p95", data.ttft_p95_ms or 0)],
                title="Time to first token",
                unit=" ms",
            ),
        },
    )
