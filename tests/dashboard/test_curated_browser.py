"""The playground's "Write the right answer" in real headless Chromium against the real stack: the owner
corrects the agent's reply in the form it opens, and the same question then gets the curated answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.models import CuratedAnswer
from businesses.services import business_set_allowed_origins
from messaging.models import Message
from tests.dashboard.test_browser import (
    CATALOG,
    TENT_ANSWER,
    TENT_REPLY,
    owner_of,
    shoot,
    sign_in,
    widget_ask,
    widget_wait_connected,
    widget_wait_text,
)
from tests.fixtures.browser import BrowserPage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Do you have a tent for two?"
RIGHT = "For two we recommend the Ridgeline 2-person tent at 249.00 EUR; ask us about pitching it."


def test_write_the_right_answer_from_the_playground(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path, import_catalog: Callable[..., Any]
) -> None:
    base = stack.asgi.url
    membership = owner_of(name="Pine Tents", slug="pine-tents")
    business = membership.business
    business_set_allowed_origins(business, origins=[base])
    import_catalog(business, CATALOG, embed=True)

    bp = new_page()
    sign_in(bp, base, membership.user.username)
    bp.page.goto(f"{base}/app/{business.slug}/agent/")
    assert bp.page.locator("#playground-correct").is_hidden()
    widget_wait_connected(bp)
    stack.inference.script(TENT_REPLY)
    widget_ask(bp, QUESTION)
    widget_wait_text(bp, ".msg.agent:not(.greeting):not(.streaming) .bubble", TENT_ANSWER)
    reply = Message.objects.get(business=business, role=Message.Role.AGENT)

    link = bp.page.locator("#playground-correct a")
    link.wait_for(state="visible")
    assert link.get_attribute("href") == f"/app/{business.slug}/answers/new/?message={reply.pk}"
    link.click()
    bp.page.wait_for_url(f"{base}/app/{business.slug}/answers/new/?message={reply.pk}")
    assert bp.page.input_value("input[name=question]") == QUESTION
    assert bp.page.input_value("textarea[name=answer]") == TENT_ANSWER
    bp.page.fill("textarea[name=answer]", RIGHT)
    bp.page.fill("textarea[name=paraphrases]", "Which tent is best for two people?\nA tent for a couple?")
    shoot(bp, artifacts_dir, "curated-answer-form")
    bp.page.click("#curated-form button[type=submit]")
    bp.page.wait_for_url(f"{base}/app/{business.slug}/answers/")
    curated = CuratedAnswer.objects.get(business=business)
    assert (curated.question, curated.answer, curated.source_message_id) == (QUESTION, RIGHT, reply.pk)
    assert bp.page.locator("#curated-answers tr[data-curated]").count() == 1
    shoot(bp, artifacts_dir, "curated-answers")

    bp.page.goto(f"{base}/app/{business.slug}/agent/")
    widget_wait_connected(bp)
    widget_ask(bp, "do you have a tent for two people?")
    widget_wait_text(bp, ".msg.agent:not(.greeting):not(.streaming) .bubble", RIGHT)
    latest = Message.objects.filter(business=business, role=Message.Role.AGENT).latest("pk")
    assert latest.text == RIGHT and latest.grounding["curated_answer"] == curated.pk
    assert bp.errors == []
