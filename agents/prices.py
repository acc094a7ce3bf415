"""Prices in text: find the prices a text states, parse their amounts, write a catalog price back the way
the text wrote one. Pure functions.

``find_prices`` reads ``€12.50``, ``12,50 EUR``, ``$9.99``, ``9.99 USD``, ``1.299,00 €``, ``£5``,
``12.50 euros``; a plain number (``2 people``, ``1.9 kg``) is not a price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR"}
CODES = {
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "usd": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "gbp": "GBP",
    "pounds": "GBP",
    "chf": "CHF",
    "sek": "SEK",
    "nok": "NOK",
    "dkk": "DKK",
    "pln": "PLN",
    "cad": "CAD",
    "aud": "AUD",
    "jpy": "JPY",
    "inr": "INR",
}
_SYMBOL = r"[€$£¥₹]"
_CODE = r"(?:" + "|".join(sorted(CODES, key=len, reverse=True)) + r")\b"
# 1,299.00 | 1.299,00 | 1299 | 12.5 | 12,50 (a thousands group needs three digits after it).
_AMOUNT = r"\d{1,3}(?:[.,\s]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_PRICE = re.compile(
    rf"(?P<pre>{_SYMBOL}|\b(?:EUR|USD|GBP|CHF|CAD|AUD)\b)\s?(?P<a1>{_AMOUNT})(?![\d])"
    rf"|(?<![\w.,])(?P<a2>{_AMOUNT})\s?(?P<post>{_SYMBOL}|{_CODE})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PriceMention:
    start: int
    end: int
    raw: str
    amount: Decimal
    currency: str | None  # None: the text gave no currency
    symbol_first: bool
    comma_decimal: bool


def parse_amount(raw: str) -> tuple[Decimal, bool] | None:
    """``"1.299,00"`` -> (1299.00, comma decimal). The last separator followed by 1-2 digits is the decimal."""
    raw = raw.replace(" ", "").replace("\u00a0", "")
    match = re.search(r"[.,](\d{1,2})$", raw)
    comma_decimal = False
    if match:
        comma_decimal = raw[match.start()] == ","
        whole = re.sub(r"[.,]", "", raw[: match.start()])
        number = f"{whole}.{match.group(1)}"
    else:
        number = re.sub(r"[.,]", "", raw)
    try:
        return Decimal(number), comma_decimal
    except InvalidOperation:
        return None


def find_prices(text: str) -> list[PriceMention]:
    mentions = []
    for match in _PRICE.finditer(text):
        amount_raw = match.group("a1") or match.group("a2")
        parsed = parse_amount(amount_raw)
        if parsed is None:
            continue
        marker = match.group("pre") or match.group("post") or ""
        currency = SYMBOLS.get(marker) or CODES.get(marker.lower()) or marker.upper() or None
        mentions.append(
            PriceMention(
                start=match.start(),
                end=match.end(),
                raw=match.group(0),
                amount=parsed[0],
                currency=currency,
                symbol_first=bool(match.group("pre")),
                comma_decimal=parsed[1],
            )
        )
    return mentions


def format_price(amount: Decimal, currency: str, like: PriceMention | None = None) -> str:
    """The catalog's price, written the way the reply wrote the wrong one (symbol first, comma decimal)."""
    number = f"{amount:.2f}"
    if like is not None and like.comma_decimal:
        number = number.replace(".", ",")
    symbol = {code: sym for sym, code in SYMBOLS.items()}.get(currency.upper())
    if like is not None and like.symbol_first and symbol:
        return f"{symbol}{number}"
    if like is not None and like.symbol_first:
        return f"{currency} {number}".strip()
    if like is not None and like.raw.rstrip()[-1:] in SYMBOLS and symbol:
        return f"{number} {symbol}" if " " in like.raw else f"{number}{symbol}"
    return f"{number} {currency}".strip()
