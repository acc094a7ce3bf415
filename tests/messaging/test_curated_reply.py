"""A curated answer through the reply task (the engine's prefetched retrieval, the stored reply): sent as
written, recorded on the reply, its stale product price caught; another business's never used."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from agents.services import agent_update, curated_answer_create
from catalogs.models import Item
from messaging.models import Message
from messaging.replies.engine import run_reply
from messaging.services import message_receive
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

SHIPPING = "We ship to Switzerland with DHL: 9.90 CHF, 3 to 5 working days."
STALE = "For two people we recommend the Ridgeline 2-person tent at 229.00 EUR."


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def _reply_to(business: Any, text: str) -> Message:
    message = message_receive(
        business=business, text=text, channel="whatsapp", contact_external_id="4915550001"
    )
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    return Message.objects.get(business=business, role="agent", reply_to=message)


@pytest.mark.django_db(transaction=True)
def test_the_stored_reply_is_the_curated_answer_and_says_so(pool_server: Any, shop: Any) -> None:
    curated = curated_answer_create(business=shop, question="Do you ship to Switzerland?", answer=SHIPPING)
    reply = _reply_to(shop, "Do you deliver to Switzerland?")
    assert reply.text == SHIPPING and reply.status == "done"
    assert reply.grounding["curated_answer"] == curated.pk
    assert reply.grounding["ok"] is True
    assert pool_server.chat_requests == 0


@pytest.mark.django_db(transaction=True)
def test_a_stale_price_in_a_curated_answer_is_flagged_on_the_stored_reply(
    pool_server: Any, shop: Any
) -> None:
    curated = curated_answer_create(
        business=shop, question="Which tent do you recommend for two?", answer=STALE
    )
    agent_update(shop, grounding_mode="flag")
    reply = _reply_to(shop, "Which tent do you recommend for two?")
    tent = Item.objects.get(business=shop, external_id="TENT-2P")
    assert reply.text == STALE
    assert reply.grounding["curated_answer"] == curated.pk
    assert (reply.grounding["ok"], reply.grounding["action"]) == (False, "flagged")
    assert reply.grounding["issues"] == [
        {"kind": "wrong_price", "text": "229.00 EUR", "item_id": tent.pk, "expected": "249.00 EUR"}
    ]


@pytest.mark.django_db(transaction=True)
def test_another_businesss_curated_answer_is_never_sent(
    pool_server: Any, shop: Any, import_catalog: Any
) -> None:
    other = BusinessFactory()
    import_catalog(other, SMALL_CATALOG_CSV, embed=True)
    curated_answer_create(business=other, question="How much is the tent?", answer="Free for you today!")
    reply = _reply_to(shop, "How much is the tent?")
    assert reply.text.startswith("Ridgeline 2-person tent: 249.00 EUR, in stock.")
    assert "curated_answer" not in reply.grounding
