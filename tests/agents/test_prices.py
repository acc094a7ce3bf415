"""agents.prices: the prices a text states, in the formats customers and models write them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.prices import find_prices


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("only €12.50 today", "12.50", "EUR"),
        ("only € 12,50 today", "12.50", "EUR"),
        ("costs 12,50 EUR", "12.50", "EUR"),
        ("costs $9.99", "9.99", "USD"),
        ("costs 9.99 USD", "9.99", "USD"),
        ("costs 1.299,00 €", "1299.00", "EUR"),
        ("costs $1,299.00", "1299.00", "USD"),
        ("costs £5", "5", "GBP"),
        ("costs 12.50 euros", "12.50", "EUR"),
        ("costs EUR 40", "40", "EUR"),
        ("costs 249€", "249", "EUR"),
    ],
)
def test_find_prices_reads_common_formats(text: str, amount: str, currency: str) -> None:
    [mention] = find_prices(text)
    assert mention.amount == Decimal(amount)
    assert mention.currency == currency


def test_find_prices_ignores_plain_numbers() -> None:
    assert find_prices("It sleeps 2 people, weighs 1.9 kg and packs to 8 litres.") == []
