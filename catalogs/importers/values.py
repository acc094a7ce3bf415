"""One cell's text -> a canonical value, for every format: prices (with "price on request" in the languages
shops write it), availability, and HTML descriptions as plain text. ``parse_price`` and
``parse_availability`` raise ``ValueError`` with the reason a person reads in the import's error report."""

from __future__ import annotations

import html
import re
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser

_CENT = Decimal("0.01")
CURRENCY_SYMBOLS = {
    "$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "₩": "KRW",
    "R$": "BRL",
    "zł": "PLN",
}
_SYMBOLS_LONGEST_FIRST = sorted(CURRENCY_SYMBOLS.items(), key=lambda kv: -len(kv[0]))
_PRICE_RE = re.compile(r"^(?P<number>[+-]?\d[\d.,' \u00a0\u202f]*)$")
# The form Meta and Google ask for ("9.99 USD"), parsed without the general path (most rows of most feeds).
_CANONICAL_PRICE = re.compile(r"(\d{1,12}(?:\.\d{1,4})?) ([A-Z]{3})")


# "Price on request" as shops write it in a price cell (docs/catalogs.md lists them). Compared after
# ``_on_request_key``: case-folded, punctuation and spacing tidied, so "P.O.A.", "p. o. a." and "(POA)" match.
PRICE_ON_REQUEST_PHRASES = (
    # English
    "on request",
    "price on request",
    "upon request",
    "price upon request",
    "POA",
    "P.O.A.",
    "price on application",
    "price upon application",
    "call for price",
    "ask for price",
    "contact us",
    # German
    "auf Anfrage",
    "Preis auf Anfrage",
    "a.A.",
    # French
    "sur demande",
    "prix sur demande",
    # Italian
    "su richiesta",
    "prezzo su richiesta",
    # Spanish
    "a consultar",
    "bajo pedido",
    "precio a consultar",
    # Dutch
    "op aanvraag",
    "prijs op aanvraag",
)


def _on_request_key(text: str) -> str:
    """``" (Price: on-request!) "`` -> ``"price on request"``; ``"P. O. A."`` -> ``"p.o.a"``.

    Dots inside are kept (without the spaces after them) so that an abbreviation only matches its own
    spelling: ``"a.A."`` is "auf Anfrage", ``"AA"`` stays a bad price.
    """
    key = re.sub(r"[^\w.]+", " ", text.casefold()).replace("_", " ")
    key = re.sub(r"\.\s*", ".", key)
    return re.sub(r"\s+", " ", key).strip(" .")


_ON_REQUEST_KEYS = frozenset(_on_request_key(phrase) for phrase in PRICE_ON_REQUEST_PHRASES)
# A currency beside the phrase ("on request EUR", "EUR POA", "€ auf Anfrage"): a code or symbol at either end.
_KNOWN_CURRENCY_CODES = frozenset(
    {*CURRENCY_SYMBOLS.values(), "CHF", "SEK", "NOK", "DKK", "CZK", "HUF", "CAD", "AUD", "NZD", "MXN", "ZAR"}
)
_ON_REQUEST_CURRENCY = (
    re.compile(r"^(?P<code>[A-Za-z]{3})\s+(?P<rest>.+)$"),
    re.compile(r"^(?P<rest>.+?)\s+(?P<code>[A-Za-z]{3})$"),
)


def price_on_request(raw: str) -> tuple[bool, str]:
    """Whether a price cell says "price on request" (in any of ``PRICE_ON_REQUEST_PHRASES``), and the
    currency written beside the phrase, if any: ``"Auf Anfrage"`` -> (True, ""), ``"POA EUR"`` ->
    (True, "EUR"), ``"9.99"`` -> (False, "")."""
    text = raw.strip()
    if not text or any(ch.isdigit() for ch in text):
        return False, ""
    # Symbols first: the key drops them as punctuation, which would lose the currency.
    for symbol, code in _SYMBOLS_LONGEST_FIRST:
        if text.startswith(symbol) or text.endswith(symbol):
            rest = text.removeprefix(symbol) if text.startswith(symbol) else text.removesuffix(symbol)
            if _on_request_key(rest) in _ON_REQUEST_KEYS:
                return True, code
    if _on_request_key(text) in _ON_REQUEST_KEYS:
        return True, ""
    for pattern in _ON_REQUEST_CURRENCY:
        match = pattern.match(text)
        if not match or _on_request_key(match.group("rest")) not in _ON_REQUEST_KEYS:
            continue
        code = match.group("code")
        # A code as feeds write it ("EUR"), or a known one in any case ("eur"); "not on request" is no price.
        if code.isupper() or code.upper() in _KNOWN_CURRENCY_CODES:
            return True, code.upper()
    return False, ""


def parse_price(raw: str) -> tuple[Decimal | None, str]:
    """``"9.99 USD"``, ``"USD 9.99"``, ``"$9.99"``, ``"9,99 EUR"``, ``"1.234,56 EUR"`` -> (Decimal, currency).

    Empty -> (None, ""). "Price on request" (``price_on_request``) -> (None, the currency beside it, if any):
    the item has no price, which the agent tells a customer as "price on request". Raises ``ValueError``
    with the reason when the text is not a price.
    """
    text = raw.strip()
    if not text:
        return None, ""
    canonical = _CANONICAL_PRICE.fullmatch(text)
    if canonical:
        return Decimal(canonical.group(1)).quantize(_CENT), canonical.group(2)
    on_request, on_request_currency = price_on_request(text)
    if on_request:
        return None, on_request_currency
    currency = ""
    for symbol, code in _SYMBOLS_LONGEST_FIRST:
        if symbol in text:
            text = text.replace(symbol, " ")
            currency = code
            break
    match = re.search(r"(?<![A-Za-z])([A-Za-z]{3})(?![A-Za-z])", text)
    if match:
        currency = match.group(1).upper()
        text = (text[: match.start()] + " " + text[match.end() :]).strip()
    text = text.strip()
    if not _PRICE_RE.match(text):
        raise ValueError(f"not a price: {raw.strip()[:60]!r}")
    number = re.sub(r"[' \u00a0\u202f]", "", text)
    last_dot, last_comma = number.rfind("."), number.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        # Both present: the last one is the decimal separator ("1.234,56" or "1,234.56").
        decimal_sep = "," if last_comma > last_dot else "."
        thousands = "." if decimal_sep == "," else ","
        number = number.replace(thousands, "").replace(decimal_sep, ".")
    elif last_comma >= 0:
        # "9,99" is a decimal comma; "1,234" / "1,234,567" are thousands groups.
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", number):
            number = number.replace(",", "")
        elif number.count(",") == 1:
            number = number.replace(",", ".")
        else:
            raise ValueError(f"not a price: {raw.strip()[:60]!r}")
    elif number.count(".") > 1:
        if not re.fullmatch(r"[+-]?\d{1,3}(\.\d{3})+", number):
            raise ValueError(f"not a price: {raw.strip()[:60]!r}")
        number = number.replace(".", "")
    try:
        value = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {raw.strip()[:60]!r}") from exc
    if value < 0:
        raise ValueError("negative price")
    if value >= Decimal("1e12"):
        raise ValueError("price too large")
    return value.quantize(_CENT), currency


_AVAILABILITY: dict[str, str] = {}
for _canonical, _words in {
    "in_stock": (
        "in stock",
        "instock",
        "available",
        "yes",
        "true",
        "1",
        "y",
        "in_stock",
        "limited availability",
        "limitedavailability",
        "onlineonly",
    ),
    "out_of_stock": (
        "out of stock",
        "outofstock",
        "sold out",
        "soldout",
        "unavailable",
        "no",
        "false",
        "0",
        "n",
        "pending",
        "mark_as_sold",
        "mark as sold",
    ),
    "preorder": ("preorder", "pre-order", "pre order", "presale"),
    "backorder": ("backorder", "back order", "back-order", "available for order", "availablefororder"),
    "discontinued": ("discontinued", "archived", "retired"),
}.items():
    for _word in _words:
        _AVAILABILITY[_word] = _canonical


def parse_availability(raw: str) -> str:
    """Meta (``in stock``), Google (``in_stock``), schema.org URLs and common synonyms -> the canonical value."""
    text = raw.strip().lower()
    if "schema.org/" in text:
        text = text.rsplit("/", 1)[-1]
    text = re.sub(r"[_\s]+", " ", text)
    value = _AVAILABILITY.get(text) or _AVAILABILITY.get(text.replace(" ", ""))
    if value is None:
        raise ValueError(f"unknown availability {raw.strip()[:40]!r}")
    return value


class _TextExtractor(HTMLParser):
    BLOCK = {"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """HTML (Shopify ``Body (HTML)``) -> plain text: tags and scripts gone, entities decoded, spaces tidied."""
    if "<" not in text and "&" not in text:
        return text.strip()
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    plain = html.unescape("".join(parser.parts))
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in plain.splitlines()]
    return "\n".join(line for line in lines if line).strip()
