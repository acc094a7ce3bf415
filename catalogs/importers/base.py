"""What every importer yields, and the mapping of a record's columns onto a canonical item.

An importer is a generator of row results: ``ParsedRow`` (a canonical item), ``ParsedChunk`` (a piece of a
FAQ/policy document) or ``RowError`` (a row that cannot be imported, with its row number, column and reason).
A file that cannot be read at all raises ``FileRejected`` with one message for a person. One cell's value
is parsed in ``catalogs.importers.values``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from catalogs.importers.values import parse_availability, parse_price, strip_html


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
