"""What every importer yields, and the normalisation shared by all formats.

An importer is a generator of row results: ``ParsedRow`` (a canonical item), ``ParsedChunk`` (a piece of a
FAQ/policy document) or ``RowError`` (a row that cannot be imported, with its row number, column and reason).
A file that cannot be read at all raises ``FileRejected`` with one message for a person.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import IO, Any
from xml.parsers import expat


class FileRejected(Exception):
    """The file as a whole cannot be imported (binary, wrong type, too big, unsafe XML, zip bomb...)."""


@dataclass(frozen=True, slots=True)
class ParsedRow:
    row_number: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    row_number: int
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class RowError:
    row_number: int
    column: str
    reason: str


RowResult = ParsedRow | ParsedChunk | RowError


# Canonical item fields, and the source column names (normalised by ``column_key``) that feed them, in order
# of preference. Meta, Google Merchant and generic exports; Shopify has its own reader (shopify.py).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": (
        "id",
        "external_id",
        "sku",
        "item_id",
        "product_id",
        "variant_sku",
        "retailer_id",
        "offer_id",
    ),
    "title": ("title", "name", "product_name", "product_title"),
    "description": ("description", "body_html", "body", "long_description", "short_description"),
    "price": ("price", "regular_price", "list_price"),
    "sale_price": ("sale_price", "special_price"),
    "currency": ("currency", "currency_code"),
    "availability": ("availability", "stock_status", "in_stock"),
    "quantity": ("quantity_to_sell_on_facebook", "quantity", "inventory", "stock", "inventory_quantity"),
    "brand": ("brand", "vendor", "manufacturer"),
    "category": ("product_type", "category", "google_product_category", "fb_product_category", "type"),
    "url": ("link", "url", "product_url", "product_link"),
    "image_url": ("image_link", "image_url", "image", "image_src", "image[0].url"),
    "item_group_id": ("item_group_id", "parent_external_id", "parent_id", "group_id", "parent_sku"),
}
KNOWN_SOURCE_COLUMNS = {alias for aliases in COLUMN_ALIASES.values() for alias in aliases}
# Columns that are kept as attributes under these names.
ATTRIBUTE_ALIASES: dict[str, str] = {"colour": "color", "g:color": "color"}
MAX_ATTRIBUTE_CHARS = 1000
MAX_ID_CHARS = 200
MAX_TITLE_CHARS = 500


def column_key(name: str) -> str:
    """``"Image Link"``, ``"g:image_link"``, ``"image-link"`` -> ``"image_link"``."""
    key = name.strip().lstrip("\ufeff").lower()
    if key.startswith("g:"):
        key = key[2:]
    return re.sub(r"[\s\-]+", "_", key)


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


@dataclass(slots=True)
class ColumnPlan:
    """How one file's columns map onto canonical fields (decided once from the header)."""

    sources: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    attributes: dict[str, str] = field(default_factory=dict)  # source column -> attribute name

    @classmethod
    def from_header(cls, header: list[str], mapping: Mapping[str, str] | None = None) -> ColumnPlan:
        plan = cls()
        keys = {column_key(name): name for name in reversed(header) if name.strip()}
        explicit = {column_key(src): dst for src, dst in (mapping or {}).items()}
        for key, name in keys.items():
            dst = explicit.get(key)
            if dst in COLUMN_ALIASES:
                plan.sources.setdefault(dst, name)
        for canonical, aliases in COLUMN_ALIASES.items():
            if canonical in plan.sources:
                continue
            for alias in aliases:
                if alias in keys and keys[alias] not in plan.sources.values():
                    plan.sources[canonical] = keys[alias]
                    break
        used = set(plan.sources.values())
        for key, name in keys.items():
            if name in used:
                continue
            dst = explicit.get(key)
            if dst == "":
                continue  # explicitly ignored
            plan.attributes[name] = dst or ATTRIBUTE_ALIASES.get(key, key)
        return plan

    def missing_required(self) -> list[str]:
        return [f for f in ("external_id", "title") if f not in self.sources]


def _value(record: Mapping[str, Any], column: str | None) -> str:
    if column is None:
        return ""
    value = record.get(column)
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def build_item(record: Mapping[str, Any], plan: ColumnPlan, row_number: int) -> ParsedRow | RowError:
    """One source record -> a canonical item, or the first reason it cannot be one."""
    src = plan.sources
    external_id = _value(record, src.get("external_id"))
    if not external_id:
        return RowError(row_number, src.get("external_id", "id"), "missing id")
    if len(external_id) > MAX_ID_CHARS:
        return RowError(row_number, src["external_id"], f"id longer than {MAX_ID_CHARS} characters")
    title = strip_html(_value(record, src.get("title")))
    if not title:
        return RowError(row_number, src.get("title", "title"), "missing title")
    currency = _value(record, src.get("currency")).upper()[:3]
    prices: dict[str, Decimal | None] = {}
    for name in ("price", "sale_price"):
        try:
            prices[name], found_currency = parse_price(_value(record, src.get(name)))
        except ValueError as exc:
            return RowError(row_number, src[name], str(exc))
        currency = currency or found_currency
    raw_availability = _value(record, src.get("availability"))
    if raw_availability:
        try:
            availability = parse_availability(raw_availability)
        except ValueError as exc:
            return RowError(row_number, src["availability"], str(exc))
    else:
        quantity = _value(record, src.get("quantity"))
        availability = (
            "out_of_stock"
            if quantity and quantity.lstrip("-").isdigit() and int(quantity) <= 0
            else "in_stock"
        )
    attributes: dict[str, str] = {}
    for column, name in plan.attributes.items():
        value = _value(record, column)
        if value:
            attributes[name] = value[:MAX_ATTRIBUTE_CHARS]
    quantity = _value(record, src.get("quantity"))
    if quantity:
        attributes["quantity"] = quantity
    return ParsedRow(
        row_number,
        {
            "external_id": external_id,
            "item_group_id": _value(record, src.get("item_group_id"))[:200],
            "title": title[:MAX_TITLE_CHARS],
            "description": strip_html(_value(record, src.get("description"))),
            "price": prices["price"],
            "sale_price": prices["sale_price"],
            "currency": currency,
            "availability": availability,
            "brand": _value(record, src.get("brand"))[:200],
            "category": _value(record, src.get("category"))[:500],
            "url": _value(record, src.get("url"))[:2000],
            "image_url": _value(record, src.get("image_url"))[:2000],
            "attributes": attributes,
            "variants": [],
        },
    )


def scan_xml_texts(
    stream: IO[bytes],
    what: str,
    *,
    max_count: int = 0,
    count_tag: str = "",
    dtd_refusal: str = "",
    malformed_ok: bool = False,
) -> None:
    """Stream XML through expat once: refuse a text run longer than CATALOG_MAX_FIELD_BYTES, a DTD, or (with
    ``count_tag``) more than ``max_count`` such elements. Memory: one read and a counter, whatever the text
    (ElementTree would build a huge text whole before anyone could look at it). ``malformed_ok``: stop at the
    first syntax error quietly, for a caller whose own parser reports it."""
    from django.conf import settings

    field_limit = settings.CATALOG_MAX_FIELD_BYTES
    run = 0
    count = 0

    def start(tag: str, attrs: object) -> None:
        nonlocal run, count
        run = 0
        if count_tag and tag == count_tag:
            count += 1

    def end(tag: str) -> None:
        nonlocal run
        run = 0

    def text(data: str) -> None:
        nonlocal run
        run += len(data)
        if run > field_limit:
            raise FileRejected(
                f"{what} holds a text over {field_limit:,} characters (CATALOG_MAX_FIELD_BYTES)"
            )

    def doctype(*args: object) -> None:
        raise FileRejected(dtd_refusal or f"{what} declares a DTD; refusing it")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        while chunk := stream.read(1 << 20):
            parser.Parse(chunk, False)
            if count_tag and count > max_count:
                raise FileRejected(f"{what} has more than {max_count:,} <{count_tag}> elements")
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        if malformed_ok:
            return  # the parser that follows reports it in its own words (and rolls back what it wrote)
        raise FileRejected(f"{what} is not valid XML ({exc})") from exc
