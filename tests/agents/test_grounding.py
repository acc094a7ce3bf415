"""agents.grounding: pure checks of prices, stock claims and product names against catalog rows; agents.cards."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents import grounding
from agents.cards import cards_for
from agents.grounding import GroundItem, apply, check, find_stock_claims

TENT = GroundItem(
    item_id=1,
    external_id="TENT-2P",
    title="Ridgeline 2-person tent",
    price=Decimal("249.00"),
    sale_price=None,
    currency="EUR",
    availability="in_stock",
    url="https://shop.example/p/tent-2p",
    image_url="https://shop.example/img/tent-2p.jpg",
)
BAG = GroundItem(
    item_id=2,
    external_id="BAG-0C",
    title="Alpine down sleeping bag",
    price=Decimal("189.50"),
    sale_price=Decimal("159.00"),
    currency="EUR",
    availability="out_of_stock",
)
STOVE = GroundItem(
    item_id=3,
    external_id="STOVE-1",
    title="Pocket gas stove",
    price=Decimal("39.90"),
    sale_price=None,
    currency="EUR",
    availability="in_stock",
)
ITEMS = [TENT, BAG, STOVE]


def test_stock_claims_and_negation() -> None:
    claims = find_stock_claims("It is in stock. The bag is sold out. The stove is not available.")
    assert [(c.raw, c.in_stock) for c in claims] == [
        ("in stock", True),
        ("sold out", False),
        ("not available", False),
    ]


def test_correct_prices_pass() -> None:
    text = "The Ridgeline 2-person tent costs 249.00 EUR and the Pocket gas stove is €39.90."
    result = check(text, ITEMS)
    assert result.ok is True
    assert result.issues == []
    assert result.prices_checked == 2
    assert result.products_mentioned == [1, 3]


def test_sale_price_and_list_price_both_accepted() -> None:
    for price in ("159.00 EUR", "189.50 EUR"):
        assert check(f"The Alpine down sleeping bag is {price}.", ITEMS).ok is True


def test_wrong_price_is_flagged_with_the_catalog_price() -> None:
    result = check("The Ridgeline tent is only €199.00!", ITEMS)
    assert result.ok is False
    [issue] = result.issues
    assert (issue.kind, issue.text, issue.item_id, issue.expected) == ("wrong_price", "€199.00", 1, "€249.00")


def test_wrong_currency_is_a_wrong_price() -> None:
    [issue] = check("The Pocket gas stove costs $39.90.", ITEMS).issues
    assert (issue.kind, issue.expected) == ("wrong_price", "€39.90")


def test_correct_mode_replaces_the_price_in_the_same_style() -> None:
    text = "The Pocket gas stove costs 35,00 EUR. Enjoy!"
    result = check(text, ITEMS, mode="correct")
    fixed, result = apply(text, result, withheld_message="See below:")
    assert fixed == "The Pocket gas stove costs 39,90 EUR. Enjoy!"
    assert result.action == "corrected"


def test_invented_product_price_is_withheld_even_in_correct_mode() -> None:
    text = "Our Summit 4-person dome is 499.00 EUR."
    result = check(text, ITEMS, mode="correct")
    assert [i.kind for i in result.issues] == ["unknown_price"]
    fixed, result = apply(text, result, withheld_message="Here is what I found in our catalog:")
    assert fixed == "Here is what I found in our catalog:"
    assert result.action == "withheld"
    assert [card["item_id"] for card in cards_for(result, ITEMS)] == [1, 2, 3]


def test_a_price_of_another_cited_item_in_an_unnamed_sentence_passes() -> None:
    assert check("That one is 39.90 EUR.", ITEMS).ok is True


def test_single_cited_item_gets_an_unattributed_price_corrected() -> None:
    text = "It costs 10 EUR."
    result = check(text, [STOVE])
    fixed, result = apply(text, result, withheld_message="x")
    assert fixed == "It costs 39.90 EUR."


def test_wrong_stock_claim() -> None:
    result = check("Good news: the Alpine down sleeping bag is in stock.", ITEMS)
    [issue] = result.issues
    assert (issue.kind, issue.item_id, issue.expected) == ("wrong_stock", 2, "out of stock")
    fixed, _ = apply("Good news: the Alpine down sleeping bag is in stock.", result, withheld_message="x")
    assert fixed == "Good news: the Alpine down sleeping bag is out of stock."


def test_right_stock_claims_pass() -> None:
    assert check("The TENT-2P is available, the Alpine sleeping bag is sold out.", ITEMS).ok is True


def test_withhold_mode_replaces_any_reply_with_an_issue() -> None:
    text = "The Pocket gas stove costs 35.00 EUR."
    fixed, result = apply(text, check(text, ITEMS, mode="withhold"), withheld_message="See our catalog:")
    assert fixed == "See our catalog:"
    assert result.action == "withheld"
    assert [card["item_id"] for card in cards_for(result, ITEMS)] == [3]


def test_flag_mode_keeps_the_text_and_records() -> None:
    text = "The Pocket gas stove costs 35.00 EUR."
    fixed, result = apply(text, check(text, ITEMS, mode="flag"), withheld_message="x")
    assert fixed == text
    assert result.action == "flagged"
    assert result.as_json()["issues"] == [
        {"kind": "wrong_price", "text": "35.00 EUR", "item_id": 3, "expected": "39.90 EUR"}
    ]


def test_cards_come_from_catalog_rows() -> None:
    result = check("The Ridgeline 2-person tent is great.", ITEMS)
    assert cards_for(result, ITEMS) == [
        {
            "item_id": 1,
            "external_id": "TENT-2P",
            "title": "Ridgeline 2-person tent",
            "price": "249.00",
            "sale_price": None,
            "currency": "EUR",
            "availability": "in_stock",
            "image_url": "https://shop.example/img/tent-2p.jpg",
            "url": "https://shop.example/p/tent-2p",
        }
    ]


def test_one_shared_word_does_not_name_a_product() -> None:
    assert grounding.mention_score("I like gas.", STOVE) == 0.0
    assert grounding.mention_score("the gas stove", STOVE) == pytest.approx(2 / 3)


def test_no_prices_no_claims_is_ok() -> None:
    result = check("Hello! How can I help?", ITEMS)
    assert (result.ok, result.action, result.prices_checked, result.stock_checked) == (True, "none", 0, 0)
