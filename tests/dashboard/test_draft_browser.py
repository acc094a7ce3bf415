"""Draft agent settings in real headless Chromium against the real stack: a change that breaks a price
answer is flagged by the regression suite before it is published, the playground already answers with it,
and customers keep the published settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.respond import REFUSAL
from agents.selectors import agent_for
from businesses.services import business_set_allowed_origins
from regressions.models import RegressionRun
from regressions.services import run_execute, run_start
from tests.dashboard.test_browser import (
    CATALOG,
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


def test_a_settings_change_that_breaks_a_price_answer_is_flagged_before_it_is_published(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path, import_catalog: Callable[..., Any]
) -> None:
    base = stack.asgi.url
    membership = owner_of(name="Pine Tents", slug="pine-tents")
    business = membership.business
    business_set_allowed_origins(business, origins=[base])
    import_catalog(business, CATALOG, embed=True)
    stack.inference.script(TENT_REPLY)
    # The published settings' run: every answer right.
    baseline = run_start(business=business, trigger=RegressionRun.Trigger.MANUAL, enqueue=False)
    baseline = run_execute(run_id=baseline.pk)
    assert baseline is not None and (baseline.state, baseline.failed) == ("succeeded", 0)

    bp = new_page()
    sign_in(bp, base, membership.user.username)
    bp.page.goto(f"{base}/app/{business.slug}/agent/")
    assert bp.page.locator("#draft h2").inner_text().startswith("Published settings")
    # The owner means to keep the agent off camping stoves, and writes a topic that also covers tents.
    bp.page.fill("textarea[name=forbidden_topics]", "tents")
    bp.page.click("#agent-form button[type=submit]")
    bp.page.wait_for_url(f"{base}/app/{business.slug}/agent/")
    # The suite runs on the draft (the stack's worker) and the card shows its verdict when it is in.
    verdict = bp.page.locator("#draft .draft-verdict .badge.bad")
    verdict.wait_for(timeout=60_000)
    assert "regression" in verdict.inner_text()
    assert "How much is Ridgeline 2-person tent?" in bp.page.locator("#draft table.regressions").inner_text()
    assert bp.page.locator("#publish").is_disabled()
    # The playground already talks to the draft: the tent is now a forbidden topic there.
    widget_wait_connected(bp)
    widget_ask(bp, "How much is the tent?")
    widget_wait_text(bp, ".msg.agent:not(.greeting):not(.streaming) .bubble", REFUSAL)
    shoot(bp, artifacts_dir, "agent-draft-regression")
    # Customers still get the published settings.
    assert agent_for(business).forbidden_topics == []
    assert agent_for(business).draft == {"forbidden_topics": ["tents"]}

    # Discarding the draft brings the published settings back to the card and the playground.
    bp.page.click("#draft form[action$='/discard/'] button")
    bp.page.wait_for_url(f"{base}/app/{business.slug}/agent/")
    assert bp.page.locator("#draft h2").inner_text().startswith("Published settings")
    assert agent_for(business).draft == {}
    assert bp.errors == []
