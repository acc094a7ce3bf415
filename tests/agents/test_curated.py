"""Curated answers: the services (create, update, CSV import and export), the match, and the reply that uses one
(verbatim, its product facts still checked by grounding), each inside one business."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from agents.models import CuratedAnswer, CuratedPhrasing
from agents.respond import Done
from agents.selectors import curated_answers_csv, curated_answers_list, curated_match
from agents.services import (
    CuratedAnswerInvalid,
    agent_update,
    curated_answer_create,
    curated_answer_delete,
    curated_answer_update,
    curated_answers_import,
    curated_reembed_stale,
)
from catalogs.embeddings import get_backend
from catalogs.models import Item
from tests.agents.test_respond import TENT_FACTS, ask, texts
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

SHIPPING = "We ship to Switzerland with DHL: 9.90 CHF, 3 to 5 working days, duties paid by us."


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


# --- Services -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_embeds_the_question_and_each_paraphrase() -> None:
    business = BusinessFactory()
    curated = curated_answer_create(
        business=business,
        question="  Do you ship to   Switzerland? ",
        answer=SHIPPING,
        paraphrases=[
            "Can I order from Zurich?",
            "",
            "do you ship to switzerland?",
            "Can I order from Zurich?",
        ],
    )
    assert curated.question == "Do you ship to Switzerland?"
    assert curated.paraphrases == ["Can I order from Zurich?"]
    rows = list(CuratedPhrasing.objects.filter(curated=curated).order_by("pk"))
    assert [r.text for r in rows] == ["Do you ship to Switzerland?", "Can I order from Zurich?"]
    assert all(r.business_id == business.pk and len(r.embedding) == 384 for r in rows)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("question", "answer", "error"),
    [
        ("", "Yes.", "The question is empty."),
        ("Do you ship?", "   ", "The answer is empty."),
        ("x" * 501, "Yes.", "The question is longer than 500 characters."),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(question: str, answer: str, error: str) -> None:
    business = BusinessFactory()
    with pytest.raises(CuratedAnswerInvalid, match=error):
        curated_answer_create(business=business, question=question, answer=answer)
    assert not CuratedAnswer.objects.exists()


@pytest.mark.django_db
def test_update_embeds_again_only_when_the_phrasings_change() -> None:
    business = BusinessFactory()
    curated = curated_answer_create(business=business, question="Do you ship to Switzerland?", answer="Yes.")
    first = CuratedPhrasing.objects.get(curated=curated).pk
    curated_answer_update(curated=curated, question="Do you ship to Switzerland?", answer=SHIPPING)
    assert list(CuratedPhrasing.objects.filter(curated=curated).values_list("pk", flat=True)) == [first]
    curated_answer_update(
        curated=curated,
        question="Do you deliver to Switzerland?",
        answer=SHIPPING,
        paraphrases=["Shipping to Switzerland possible?"],
    )
    curated.refresh_from_db()
    assert curated.answer == SHIPPING
    texts_ = list(
        CuratedPhrasing.objects.filter(curated=curated).order_by("pk").values_list("text", flat=True)
    )
    assert texts_ == ["Do you deliver to Switzerland?", "Shipping to Switzerland possible?"]
    curated_answer_delete(curated=curated)
    assert not CuratedAnswer.objects.exists() and not CuratedPhrasing.objects.exists()


@pytest.mark.django_db
def test_the_source_reply_must_be_the_businesss_own() -> None:
    from tests.dashboard.conftest import make_conversation

    a, b = BusinessFactory(), BusinessFactory()
    b_message = make_conversation(b).messages.get()
    with pytest.raises(CuratedAnswerInvalid, match="not one of this business's messages"):
        curated_answer_create(business=a, question="Q?", answer="A.", source_message_id=b_message.pk)
    assert not CuratedAnswer.objects.exists()


CSV_GOOD_AND_BAD = (
    "question,answer,paraphrases\n"
    'Do you ship to Switzerland?,"'
    + SHIPPING
    + '",Can I order from Zurich?|Shipping to Switzerland possible?\n'
    ",An answer without a question,\n"
    "Do you offer gift wrapping?,,\n"
    "Do you offer gift wrapping?,Yes: 3.00 EUR per parcel.,\n"
    "Do you offer gift wrapping?,Again.,\n"
    "Can I pay with PayPal?,Yes.,,extra cell\n"
)


@pytest.mark.django_db
def test_csv_import_keeps_good_rows_and_reports_bad_ones() -> None:
    business = BusinessFactory()
    result = curated_answers_import(business=business, data=("\ufeff" + CSV_GOOD_AND_BAD).encode())
    assert (result.created, result.updated) == (2, 0)
    assert result.errors == [
        {"row": 3, "reason": "The question is empty."},
        {"row": 4, "reason": "The answer is empty."},
        {"row": 6, "reason": "the same question as an earlier row"},
        {"row": 7, "reason": "more cells than columns"},
    ]
    rows = {c.question: c for c in curated_answers_list(business)}
    assert set(rows) == {"Do you ship to Switzerland?", "Do you offer gift wrapping?"}
    assert rows["Do you ship to Switzerland?"].paraphrases == [
        "Can I order from Zurich?",
        "Shipping to Switzerland possible?",
    ]
    assert CuratedPhrasing.objects.filter(business=business).count() == 4


@pytest.mark.django_db
def test_an_exported_file_imports_back_in_place() -> None:
    business = BusinessFactory()
    curated_answers_import(business=business, data=CSV_GOOD_AND_BAD.encode())
    exported = curated_answers_csv(business)
    assert exported.splitlines()[0] == "question,answer,paraphrases"
    assert (
        "Do you ship to Switzerland?,"
        + f'"{SHIPPING}"'
        + ",Can I order from Zurich?|Shipping to Switzerland possible?"
    ) in exported
    edited = exported.replace("3.00 EUR per parcel", "4.00 EUR per parcel").encode()
    result = curated_answers_import(business=business, data=edited)
    assert (result.created, result.updated, result.errors) == (0, 2, [])
    assert (
        CuratedAnswer.objects.get(question="Do you offer gift wrapping?").answer
        == "Yes: 4.00 EUR per parcel."
    )
    assert CuratedAnswer.objects.filter(business=business).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"title,text\nx,y\n", "The file has no question or answer column"),
        (b"question,answer\n\xff\xfe,x\n", "The file is not UTF-8 text."),
    ],
)
def test_an_unreadable_file_is_refused_whole(data: bytes, error: str) -> None:
    business = BusinessFactory()
    with pytest.raises(CuratedAnswerInvalid, match=error):
        curated_answers_import(business=business, data=data)
    assert not CuratedAnswer.objects.exists()


# --- Matching -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_paraphrase_matches_and_an_unrelated_question_does_not() -> None:
    business = BusinessFactory()
    curated = curated_answer_create(
        business=business,
        question="Do you ship to Switzerland?",
        answer=SHIPPING,
        paraphrases=["Can I order from Zurich?"],
    )
    match = curated_match(business, "do you deliver to switzerland")
    assert match is not None and match.curated_id == curated.pk and match.answer == SHIPPING
    assert match.similarity >= 0.8
    zurich = curated_match(business, "can I order from zurich")
    assert zurich is not None and zurich.phrasing == "Can I order from Zurich?"
    # Near in words, another question: not this answer.
    assert curated_match(business, "Do you ship to Austria?") is None
    assert curated_match(business, "What is your return policy?") is None
    curated_answer_update(curated=curated, question=curated.question, answer=SHIPPING, is_active=False)
    assert curated_match(business, "Do you ship to Switzerland?") is None


@pytest.mark.django_db
def test_another_businesss_curated_answer_never_matches() -> None:
    a, b = BusinessFactory(), BusinessFactory()
    curated_answer_create(business=a, question="Do you ship to Switzerland?", answer=SHIPPING)
    assert curated_match(b, "Do you ship to Switzerland?") is None
    assert list(curated_answers_list(b)) == []
    assert curated_answers_csv(b) == "question,answer,paraphrases\r\n"


# --- The reply ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_reply_is_the_curated_answer_verbatim(pool_server: Any, shop: Any) -> None:
    curated = curated_answer_create(
        business=shop,
        question="Do you ship to Switzerland?",
        answer=SHIPPING,
        paraphrases=["Can I order from Zurich?"],
    )
    pool_server.script("This must not be said.")
    events = ask(shop, "Do you deliver to Switzerland?")
    assert texts(events) == [SHIPPING]
    done = events[-1]
    assert isinstance(done, Done)
    # The shop's own figure (a delivery fee, no product's price) is the shop's to say.
    assert done.text == SHIPPING
    assert done.grounding["curated_answer"] == curated.pk
    assert done.grounding["curated_similarity"] >= 0.8
    assert done.grounding["ok"] is True and done.grounding["action"] == "none"
    assert done.raw_text == ""
    assert pool_server.requests == []  # verbatim: no model call


@pytest.mark.django_db(transaction=True)
def test_a_curated_answer_with_a_product_keeps_its_words_and_gets_its_card(
    pool_server: Any, shop: Any
) -> None:
    answer = "For two people we recommend the Ridgeline 2-person tent at 249.00 EUR: it is in stock."
    curated_answer_create(business=shop, question="Which tent do you recommend for two?", answer=answer)
    done = ask(shop, "which tent would you recommend for two people?")[-1]
    assert done.text == answer
    assert done.grounding["prices_checked"] == 1 and done.grounding["stock_checked"] == 1
    assert done.grounding["ok"] is True
    assert [c["external_id"] for c in done.cards] == ["TENT-2P"]


STALE = "For two people we recommend the Ridgeline 2-person tent at 229.00 EUR."


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("mode", "shown", "action"),
    [
        ("correct", STALE.replace("229.00", "249.00"), "corrected"),
        ("flag", STALE, "flagged"),
        ("withhold", "Here is what I found in our catalog:", "withheld"),
    ],
)
def test_a_price_the_catalog_changed_is_caught_by_grounding(
    pool_server: Any, shop: Any, mode: str, shown: str, action: str
) -> None:
    # The price was right when the answer was written; the catalog has changed it since.
    curated = curated_answer_create(
        business=shop, question="Which tent do you recommend for two?", answer=STALE
    )
    agent_update(shop, grounding_mode=mode)
    events = ask(shop, "Which tent do you recommend for two?")
    done = events[-1]
    assert texts(events) == [shown] and done.text == shown
    assert done.grounding["curated_answer"] == curated.pk
    assert done.grounding["action"] == action and done.grounding["ok"] is False
    tent = Item.objects.get(business=shop, external_id="TENT-2P")
    assert done.grounding["issues"] == [
        {"kind": "wrong_price", "text": "229.00 EUR", "item_id": tent.pk, "expected": "249.00 EUR"}
    ]
    assert [c["external_id"] for c in done.cards] == ["TENT-2P"]


@pytest.mark.django_db(transaction=True)
def test_a_businesss_curated_answer_is_never_used_in_anothers_reply(
    pool_server: Any, shop: Any, import_catalog: Any
) -> None:
    other = BusinessFactory()
    import_catalog(other, SMALL_CATALOG_CSV, embed=True)
    curated_answer_create(business=other, question="How much is the tent?", answer="Free for you today!")
    done = ask(shop, "How much is the tent?")[-1]
    assert done.text.startswith(TENT_FACTS)
    assert "curated_answer" not in done.grounding
    theirs = ask(other, "How much is the tent?")[-1]
    assert theirs.text == "Free for you today!"


@pytest.mark.django_db
def test_phrasings_of_another_model_are_not_compared_until_embedded_again() -> None:
    business, other = BusinessFactory(), BusinessFactory()
    curated_answer_create(business=business, question="Do you ship to Switzerland?", answer=SHIPPING)
    curated_answer_create(business=other, question="Do you ship to Switzerland?", answer=SHIPPING)
    CuratedPhrasing.objects.update(embedding_model="an-older-model")
    assert curated_match(business, "Do you ship to Switzerland?") is None
    out = io.StringIO()
    call_command("reembed_curated_answers", "--business", business.slug, stdout=out)
    assert out.getvalue() == f"{business.slug}: 1 re-embedded (model {get_backend().name})\n"
    assert curated_match(business, "Do you ship to Switzerland?") is not None
    assert curated_match(other, "Do you ship to Switzerland?") is None  # only the business named
    assert curated_reembed_stale(business_id=business.pk) == 0
