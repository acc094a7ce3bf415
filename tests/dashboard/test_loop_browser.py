"""The improvement loop in real headless Chromium against the real stack, from the customer's side to the
owner's and back: a customer's thumbs-down on the shop's own page shows in the Unanswered report, the owner
writes the right answer from it, and the customer's next asking gets that answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.models import CuratedAnswer
from messaging.models import Message
from tests.dashboard.test_browser import CATALOG, owner_of, shoot, sign_in
from tests.fixtures.browser import BrowserPage
from tests.widget.test_widget_browser import ask, demo_url, open_widget, wait_done

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Which tent should I take for two people?"
RIGHT = "For two we recommend the Ridgeline 2-person tent at 249.00 EUR: it is freestanding and light."


def test_a_thumbs_down_reaches_the_unanswered_report_and_becomes_the_answer(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path, import_catalog: Callable[..., Any]
) -> None:
    base = stack.asgi.url
    membership = owner_of(
        name="Loop Tents", slug="loop-tents", allowed_origins=[base], demo_page_enabled=True
    )
    business = membership.business
    import_catalog(business, CATALOG, embed=True)
    stack.inference.script("It is light.")

    customer = new_page()
    open_widget(customer, demo_url(stack, business))
    ask(customer, QUESTION)
    wait_done(customer)
    customer.page.locator(
        'bizagent-widget .msg.agent:not(.greeting) .rate button[aria-label="Not helpful"]'
    ).click()
    customer.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.rate button[data-rating=down]')?.getAttribute('aria-pressed') === 'true'"
    )
    assert Message.objects.get(business=business, role=Message.Role.AGENT).rating == Message.Rating.DOWN

    owner = new_page()
    sign_in(owner, base, membership.user.username)
    owner.page.goto(f"{base}/app/{business.slug}/unanswered/")
    group = owner.page.locator(".unanswered-group").first
    assert group.locator("h2").inner_text() == f"1\u00d7 {QUESTION}"
    group.locator("a", has_text="Write a curated answer").click()
    owner.page.wait_for_url(f"{base}/app/{business.slug}/answers/new/**")
    assert owner.page.input_value("input[name=question]") == QUESTION
    owner.page.fill("textarea[name=answer]", RIGHT)
    owner.page.click("#curated-form button[type=submit]")
    owner.page.wait_for_url(f"{base}/app/{business.slug}/answers/")
    assert CuratedAnswer.objects.get(business=business).answer == RIGHT
    shoot(owner, artifacts_dir, "loop-curated-from-unanswered")

    # The customer asks again, in other words: the owner's answer, as written.
    ask(customer, "Which tent would you take for two people?")
    wait_done(customer, count=2)
    latest = Message.objects.filter(business=business, role=Message.Role.AGENT).latest("pk")
    assert latest.text == RIGHT
    assert customer.errors == [] and owner.errors == []
