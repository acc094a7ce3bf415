"""Draft agent settings: the playground answers with the draft, customers with the published settings; the
suite runs on the draft and holds back one that breaks an answer the published settings got right; the
replies an owner marks right or wrong join the suite. Each inside one business."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import Client

from agents.selectors import agent_for
from agents.services import agent_draft_save, agent_update
from agents.text import sentences
from businesses.models import Membership
from catalogs.models import Item
from messaging.models import Conversation, Message
from messaging.replies.engine import run_reply
from messaging.services import message_receive
from messaging.visitors import playground_token_issue
from regressions import gate, selectors
from regressions.models import RegressionCase, RegressionRun, ReplyMark
from regressions.services import cases_regenerate, draft_run_start, run_execute
from tests.factories import BusinessFactory, MembershipFactory
from tests.messaging.test_consumer import connect, hello
from tests.regressions.test_suite import run_now
from tests.regressions.test_suite import shop as shop  # the fixture

pytestmark = pytest.mark.django_db(transaction=True)

TENT_PRICE = "How much is Ridgeline 2-person tent?"


def run_draft(business: Any) -> RegressionRun:
    run = draft_run_start(business=business, enqueue=False)
    assert run is not None
    # The published settings' first run, queued beside it when there was none, runs first.
    for pending in RegressionRun.objects.filter(business=business, on_draft=False, state="pending"):
        run_execute(run_id=pending.pk)
    finished = run_execute(run_id=run.pk)
    assert finished is not None
    return finished


def test_a_draft_that_breaks_a_price_answer_is_held_back_until_the_rule_is_off(shop: Any) -> None:
    baseline = run_now(shop)
    assert baseline.failed == 0
    agent_draft_save(shop, forbidden_topics=["tents"])
    assert agent_for(shop).forbidden_topics == []  # not published
    assert gate.draft_check(shop).state == "unchecked"
    run = run_draft(shop)
    check = gate.draft_check(shop)
    assert (check.state, check.run, check.may_publish) == ("regressed", run, False)
    assert check.report is not None and check.report.previous == baseline
    regressed = [row.result.question for row in check.report.regressions]
    assert TENT_PRICE in regressed
    with pytest.raises(
        gate.PublishBlocked, match=r"breaks \d+ answers? that the published settings got right"
    ):
        gate.draft_publish(shop)
    assert agent_for(shop).forbidden_topics == [] and agent_for(shop).draft == {"forbidden_topics": ["tents"]}
    # The owner may turn the rule off, and then publish.
    agent_update(shop, publish_requires_suite=False)
    assert gate.draft_publish(shop) == ["forbidden_topics"]
    agent = agent_for(shop)
    assert (agent.forbidden_topics, agent.draft) == (["tents"], {})
    # The published settings are run again (the draft's run was held back: it stays the draft's).
    assert RegressionRun.objects.filter(business=shop, on_draft=False, state="pending").exists()


def test_a_passing_draft_is_published_and_its_run_becomes_the_published_settings_run(shop: Any) -> None:
    run_now(shop)
    agent_draft_save(shop, greeting="Welcome to the trail shop!")
    run = run_draft(shop)
    check = gate.draft_check(shop)
    assert (check.state, check.may_publish) == ("passed", True)
    assert gate.draft_publish(shop) == ["greeting"]
    assert agent_for(shop).greeting == "Welcome to the trail shop!"
    assert selectors.run_latest(shop) == RegressionRun.objects.get(pk=run.pk)
    assert not RegressionRun.objects.filter(business=shop, state="pending").exists()


def test_a_draft_still_being_checked_is_not_published(shop: Any) -> None:
    run_now(shop)
    agent_draft_save(shop, greeting="Hello there")
    draft_run_start(business=shop, enqueue=False)
    assert gate.draft_check(shop).state == "running"
    with pytest.raises(gate.PublishBlocked, match="still checking"):
        gate.draft_publish(shop)
    assert agent_for(shop).greeting != "Hello there"


def test_a_draft_is_validated_like_the_settings(shop: Any) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        agent_draft_save(shop, grounding_mode="whatever")
    with pytest.raises(ValueError, match="not drafted agent settings"):
        agent_draft_save(shop, theme_color="#000000")
    assert agent_for(shop).draft == {}


def _reply(business: Any, text: str, *, conversation: Conversation | None = None) -> Message:
    message = message_receive(
        business=business,
        text=text,
        channel="widget",
        contact_external_id="visitor-1" if conversation is None else conversation.contact.external_id,
        conversation_id=conversation.pk if conversation else None,
    )
    assert message is not None
    async_to_sync(run_reply)(message.pk)
    return Message.objects.get(business=business, role="agent", reply_to=message)


def test_the_playground_answers_with_the_draft_and_customers_with_the_published_settings(
    pool_server: Any,
    shop: Any,
) -> None:
    agent_update(shop, no_results_message="Published: nothing found.")
    agent_draft_save(shop, no_results_message="Draft: nothing found.")
    customer = _reply(shop, "do you sell pizza?")
    assert customer.text == "Published: nothing found."
    playground = message_receive(
        business=shop, text="do you sell pizza?", channel="widget", contact_external_id="owner", preview=True
    )
    assert playground is not None
    async_to_sync(run_reply)(playground.pk)
    reply = Message.objects.get(business=shop, role="agent", reply_to=playground)
    assert reply.text == "Draft: nothing found."
    assert Conversation.objects.get(pk=playground.conversation_id).preview is True


async def test_only_the_businesss_live_playground_token_opens_a_preview_conversation(settings: Any) -> None:
    business, other = await database_sync_to_async(lambda: (BusinessFactory(), BusinessFactory()))()
    cases = [
        (playground_token_issue(business.pk), True),
        (playground_token_issue(other.pk), False),  # another business's
        ("forged:token", False),
        (12, False),
    ]
    for n, (token, preview) in enumerate(cases, start=1):
        ws = await connect(business)
        ready = await hello(ws, preview=token)
        assert ready["type"] == "ready"
        await ws.send_json_to({"type": "message", "client_id": f"c-{n}", "text": "hello?"})
        conversation = await _nth_conversation(business, n)
        await ws.disconnect()
        assert conversation.preview is preview, token


async def _nth_conversation(business: Any, n: int, timeout: float = 60) -> Conversation:
    """The business's ``n``-th conversation, once the socket has opened it (the message is stored before
    its frames are sent; a loaded machine may take a while)."""
    rows = Conversation.objects.filter(business=business).order_by("pk")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await database_sync_to_async(lambda: list(rows[n - 1 : n]))()
        if found:
            return found[0]
        assert asyncio.get_running_loop().time() < deadline, f"conversation {n} was never opened"
        await asyncio.sleep(0.1)


# --- Replies the owner marks --------------------------------------------------------------------------------


def _owner(business: Any) -> Client:
    client = Client()
    client.force_login(MembershipFactory(business=business, role=Membership.Role.OWNER).user)
    return client


def test_a_reply_marked_right_is_tested_with_todays_price_and_one_marked_wrong_must_not_come_back(
    pool_server: Any,
    shop: Any,
    import_catalog: Any,
) -> None:
    pool_server.script("Happy camping!")
    right = _reply(shop, "how much is the tent?")
    wrong = _reply(shop, "do you sell pizza?")
    client = _owner(shop)
    for reply, verdict in ((right, "good"), (wrong, "bad")):
        response = client.post(f"/app/{shop.slug}/inbox/messages/{reply.pk}/mark/", {"verdict": verdict})
        assert response.status_code == 302
    marked = {c.question: c.expected for c in RegressionCase.objects.filter(business=shop, kind="marked")}
    assert marked["how much is the tent?"] == {
        "title": "Ridgeline 2-person tent",
        "external_id": "TENT-2P",
        "price": "249.00",
        "currency": "EUR",
    }
    assert marked["do you sell pizza?"] == {"avoid": [sentences(wrong.text)[0]]}
    # Marking again replaces the verdict; a price change in the catalog is what the case then expects.
    client.post(f"/app/{shop.slug}/inbox/messages/{right.pk}/mark/", {"verdict": "good"})
    assert ReplyMark.objects.filter(business=shop).count() == 2
    Item.objects.filter(business=shop, external_id="TENT-2P").update(price="229.00")
    cases_regenerate(business=shop)
    case = RegressionCase.objects.get(business=shop, kind="marked", question="how much is the tent?")
    assert case.expected["price"] == "229.00"
    # The wrong reply comes back: its case fails.
    run = run_now(shop)
    result = run.results.get(case__kind="marked", question="do you sell pizza?")
    assert result.passed is False and "marked wrong" in result.missing[0]


def test_marking_is_refused_for_another_businesss_reply_and_for_bad_input(
    pool_server: Any, shop: Any
) -> None:
    reply = _reply(shop, "how much is the tent?")
    other = BusinessFactory()
    response = _owner(other).post(f"/app/{other.slug}/inbox/messages/{reply.pk}/mark/", {"verdict": "good"})
    assert response.status_code == 404
    client = _owner(shop)
    response = client.post(f"/app/{shop.slug}/inbox/messages/{reply.pk}/mark/", {"verdict": "excellent"})
    assert response.status_code == 302
    customer = Message.objects.get(pk=reply.reply_to_id)
    client.post(f"/app/{shop.slug}/inbox/messages/{customer.pk}/mark/", {"verdict": "good"})
    assert not ReplyMark.objects.exists()
