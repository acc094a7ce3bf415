"""The analytics figures, computed from real rows, exact; another business's rows never count."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from businesses.models import Business
from catalogs.models import Item
from dashboard import analytics_selectors
from dashboard.views.inbox import TAKEOVER_REASON
from messaging.models import Conversation, Message
from tests.dashboard.conftest import Tenant, make_conversation, make_item

pytestmark = pytest.mark.django_db


def _noon_past() -> dt.datetime:
    """12:00 UTC (13:00 in Berlin) today, or yesterday when that is less than an hour ago: a fixed time of
    day for the day buckets, and in the past, since the pages read up to the real now."""
    now = dt.datetime.now(dt.UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    return noon if noon <= now - dt.timedelta(hours=1) else noon - dt.timedelta(days=1)


NOW = _noon_past()


def _reply(conversation: Conversation, customer: Message, **fields: object) -> Message:
    return Message.objects.create(
        business=conversation.business,
        conversation=conversation,
        channel=conversation.channel,
        role=Message.Role.AGENT,
        status=Message.Status.DONE,
        reply_to=customer,
        **fields,
    )


def _cite(*items: Item) -> list[dict[str, object]]:
    return [
        {
            "kind": "item",
            "item_id": i.pk,
            "chunk_id": None,
            "external_id": i.external_id,
            "title": i.title,
            "score": 0.9,
        }
        for i in items
    ]


def _dataset(business: Business) -> tuple[Item, Item]:
    boot = make_item(business, external_id="B1", title="Trail boot")
    sock = make_item(business, external_id="S1", title="Wool sock")
    c1 = make_conversation(business, text="do you have boots?")
    _reply(
        c1,
        c1.messages.get(),
        text="Yes: Trail boot.",
        citations=_cite(boot, sock),
        timings={"first_token": 100.0},
        rating=Message.Rating.UP,
    )
    c2 = make_conversation(business, text="how much is the boot?")
    _reply(
        c2,
        c2.messages.get(),
        text="It costs 10 EUR.",
        citations=_cite(boot),
        timings={"first_token": 300.0},
        rating=Message.Rating.DOWN,
        grounding={
            "ok": False,
            "issues": [
                {"kind": "wrong_price", "text": "10 EUR", "item_id": boot.pk, "expected": "89.00 EUR"}
            ],
        },
    )
    c3 = make_conversation(business, text="I want a refund")
    _reply(
        c3, c3.messages.get(), text="Connecting you.", grounding={"handoff": "customer asked for a person"}
    )
    Conversation.objects.filter(pk=c3.pk).update(state="human", handoff_reason="customer asked for a person")
    c4 = make_conversation(business, text="where is my order?")
    _reply(
        c4,
        c4.messages.get(),
        text="I could not find that.",
        timings={"first_token": 200.0},
        rating=Message.Rating.DOWN,
    )
    Message.objects.create(
        business=business,
        conversation=c4,
        channel=c4.channel,
        role="staff",
        text="Shipped today.",
        status="done",
    )
    Conversation.objects.filter(pk=c4.pk).update(state="human", handoff_reason=TAKEOVER_REASON)
    # Everything today (Berlin), except conversation 1, two days earlier.
    Conversation.objects.filter(business=business).update(created_at=NOW - dt.timedelta(hours=1))
    Message.objects.filter(business=business).update(created_at=NOW - dt.timedelta(hours=1))
    Conversation.objects.filter(pk=c1.pk).update(created_at=NOW - dt.timedelta(days=2))
    Message.objects.filter(conversation=c1).update(created_at=NOW - dt.timedelta(days=2))
    return boot, sock


def test_analytics_figures(business: Business, tenant_b: Tenant) -> None:
    boot, sock = _dataset(business)
    _dataset(tenant_b.business)  # the same again in another business: must not show up
    a = analytics_selectors.analytics(business, days=7, now=NOW)
    assert a.days[-1] == NOW.date()
    assert len(a.days) == 7
    assert a.conversations_per_day == [0, 0, 0, 0, 1, 0, 3]
    assert a.messages_per_day == [0, 0, 0, 0, 2, 0, 7]
    assert a.conversations == 4
    assert a.answered_without_human == 0.5
    assert a.handoffs == 2
    assert a.handoff_reasons == [("customer asked for a person", 1), (TAKEOVER_REASON, 1)]
    assert (a.ttft_p50_ms, a.ttft_p95_ms, a.replies_measured) == (200.0, 290.0, 3)
    assert a.grounding_flagged == 1
    assert a.grounding_flags == [("wrong price", 1)]
    assert [text for text, _ in a.unanswered] == ["where is my order?"]
    assert a.top_products == [(boot, 2), (sock, 1)]
    assert (a.thumbs_up, a.thumbs_down, a.thumbs_up_share) == (1, 2, 1 / 3)


def test_analytics_of_an_empty_business(business: Business) -> None:
    a = analytics_selectors.analytics(business, days=30, now=NOW)
    assert (a.conversations, a.answered_without_human, a.handoffs, a.ttft_p50_ms, a.replies_measured) == (
        0,
        None,
        0,
        None,
        0,
    )
    assert a.conversations_per_day == [0] * 30
    assert (a.thumbs_up, a.thumbs_down, a.thumbs_up_share) == (0, 0, None)


def test_analytics_page_draws_its_charts(tenant_a: Tenant) -> None:
    _dataset(tenant_a.business)
    client = Client()
    client.force_login(tenant_a.owner)
    html = client.get(f"/app/{tenant_a.business.slug}/analytics/?days=7").content.decode()
    assert html.count('data-chart="bar"') == 1
    assert html.count('data-chart="hbar"') == 4
    assert "Trail boot" in html
    assert "where is my order?" in html
    assert '<span class="num" id="kpi-feedback">33%</span>' in html
    assert '<span id="kpi-thumbs-up">1</span> up, <span id="kpi-thumbs-down">2</span> down' in html
    assert "<span>resolution rate: conversations without a handoff</span>" in html
