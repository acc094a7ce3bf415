"""The unanswered questions: which are collected, how they group (the local embedding model, real Redis),
the page, and that a business never sees another's questions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from businesses.models import Business
from dashboard import unanswered_selectors
from messaging.models import Conversation, Message
from tests.dashboard.conftest import Tenant, make_conversation

pytestmark = pytest.mark.django_db


def _asked(
    business: Business,
    question_text: str,
    *,
    ago: dt.timedelta | None = None,
    text: str = "Sorry, I could not find that.",
    **reply: Any,
) -> Message:
    """A widget conversation: the question and the agent's reply ``text`` with ``reply``'s fields; returns the
    question."""
    conversation = make_conversation(business, text=question_text)
    question = conversation.messages.get()
    Message.objects.create(
        business=business,
        conversation=conversation,
        channel=conversation.channel,
        role=Message.Role.AGENT,
        status=Message.Status.DONE,
        text=text,
        reply_to=question,
        **reply,
    )
    if ago is not None:
        Message.objects.filter(pk=question.pk).update(created_at=timezone.now() - ago)
    return question


def _dataset(business: Business) -> dict[str, Message]:
    return {
        "ship1": _asked(business, "Do you ship to Canada?", grounding={"no_results": True}),
        "ship2": _asked(business, "Can you deliver to Canada?", grounding={"no_results": True}),
        "ship3": _asked(business, "Is shipping to Canada possible?", grounding={"no_results": True}),
        "open1": _asked(business, "What time do you open?", grounding={"handoff": "customer asked"}),
        "open2": _asked(
            business,
            "When are you open on Sunday?",
            grounding={"ok": False, "action": "flagged"},
            rating=Message.Rating.DOWN,
        ),
        "return": _asked(business, "What is your return policy?", grounding={"action": "withheld"}),
        # Not collected: a good answer, a corrected one (the customer got the catalog's price), a thumbs-up,
        # one outside the window, a question still waiting for its reply.
        "good": _asked(
            business, "Do you sell tents?", text="Yes: the Ridgeline tent.", grounding={"ok": True}
        ),
        "corrected": _asked(
            business, "How much is the tent?", grounding={"ok": False, "action": "corrected"}
        ),
        "liked": _asked(business, "Do you ship to Spain?", rating=Message.Rating.UP),
        "old": _asked(
            business, "Do you ship to Canada?", grounding={"no_results": True}, ago=dt.timedelta(days=40)
        ),
        "waiting": make_conversation(business, text="Do you ship to Canada?").messages.get(),
    }


def test_questions_are_collected_and_grouped_by_meaning(business: Business) -> None:
    q = _dataset(business)
    result = unanswered_selectors.unanswered(business, days=30)
    assert result.by_meaning and not result.capped
    assert result.questions == 6
    groups = [
        (g.count, sorted(x.message_id for x in g.questions), dict(g.reason_counts)) for g in result.groups
    ]
    assert groups == [
        (3, sorted([q["ship1"].pk, q["ship2"].pk, q["ship3"].pk]), {"no_results": 3}),
        (2, sorted([q["open1"].pk, q["open2"].pk]), {"handoff": 1, "flagged": 1, "thumbs_down": 1}),
        (1, [q["return"].pk], {"withheld": 1}),
    ]
    ship = result.groups[0]
    # Newest first; examples link to their conversations.
    assert [x.message_id for x in ship.examples] == [q["ship3"].pk, q["ship2"].pk, q["ship1"].pk]
    assert ship.examples[0].conversation_id == q["ship3"].conversation_id
    assert ship.question == "Is shipping to Canada possible?"
    assert result.groups[1].reasons == [("reply flagged", 1), ("handed to a person", 1), ("thumbs down", 1)]


def test_the_window_is_capped_to_the_newest_questions(business: Business) -> None:
    for n in range(4):
        _asked(business, f"Do you have gift card number {n}?", grounding={"no_results": True})
    result = unanswered_selectors.unanswered(business, limit=3)
    assert (result.questions, result.capped) == (3, True)
    assert sum(g.count for g in result.groups) == 3


def test_the_same_wording_repeated_is_one_group_and_its_question(business: Business) -> None:
    for text in ("do you ship to canada", "Do you ship to Canada?", "Can you deliver to Canada?"):
        _asked(business, text, grounding={"no_results": True})
    (group,) = unanswered_selectors.unanswered(business).groups
    assert group.count == 3
    assert group.question == "Do you ship to Canada?"  # the most frequent wording, the newest of it


def test_grouping_keeps_distinct_vectors_apart() -> None:
    import numpy as np

    vectors = np.array([[1, 0, 0], [0.96, 0.28, 0], [0, 1, 0], [0, 0, 1], [0.1, 0.99, 0]], dtype=np.float32)
    assert unanswered_selectors.group_questions(vectors, threshold=0.9) == [[0, 1], [2, 4], [3]]


def test_the_page_lists_the_groups_with_their_links(tenant_a: Tenant) -> None:
    q = _dataset(tenant_a.business)
    slug = tenant_a.business.slug
    client = Client()
    client.force_login(tenant_a.owner)
    response = client.get(f"/app/{slug}/unanswered/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="card unanswered-group"') == 3
    assert "Is shipping to Canada possible?" in html
    assert "nothing relevant found: 3" in html
    assert f"/app/{slug}/inbox/{q['ship1'].conversation_id}/" in html
    assert f"/app/{slug}/catalog/search/?q=Is+shipping+to+Canada+possible%3F" in html
    # One click to a curated answer: its form, pre-filled with the group's question.
    curated = f"/app/{slug}/answers/new/?question=Is+shipping+to+Canada+possible%3F"
    assert curated in html
    form = client.get(curated).content.decode()
    assert "Is shipping to Canada possible?" in form
    assert "Do you sell tents?" not in html and "How much is the tent?" not in html
    assert f'href="/app/{slug}/unanswered/"' in html  # in the menu


def test_business_b_never_sees_a_questions(tenant_a: Tenant, tenant_b: Tenant) -> None:
    _dataset(tenant_a.business)
    _asked(tenant_b.business, "Do you sell kayaks?", grounding={"no_results": True})
    client = Client()
    client.force_login(tenant_b.owner)
    html = client.get(f"/app/{tenant_b.business.slug}/unanswered/").content.decode()
    assert "Do you sell kayaks?" in html
    assert "Canada" not in html and "What time do you open?" not in html
    result = unanswered_selectors.unanswered(tenant_b.business)
    assert [[x.text for x in g.questions] for g in result.groups] == [["Do you sell kayaks?"]]
    # B's owner cannot open A's page (a member of A only: 404, as for every business page).
    assert client.get(f"/app/{tenant_a.business.slug}/unanswered/").status_code == 404


def test_staff_may_not_open_the_page(tenant_a: Tenant) -> None:
    client = Client()
    client.force_login(tenant_a.staff)
    assert client.get(f"/app/{tenant_a.business.slug}/unanswered/").status_code == 403


def test_an_empty_business(business: Business) -> None:
    result = unanswered_selectors.unanswered(business)
    assert (result.groups, result.questions, result.capped) == ([], 0, False)
    assert Conversation.objects.filter(business=business).count() == 0
