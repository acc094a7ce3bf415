"""Tables of rows (CSV/TSV files and XLSX sheets): Meta, Google Merchant, generic and Shopify columns, and
question/answer FAQ tables.

``Table`` takes the rows of any tabular source as ``(row_number, cells)``, skips the leading ``#`` rows of
Meta's Commerce Manager template, reads the header, and decides what the table is:

- a Shopify product export (``Handle`` / ``URL handle`` columns): rows of one handle are one product,
  its variants in ``Item.variants``;
- a FAQ table (``question`` and ``answer`` columns): one chunk per pair;
- otherwise a product feed, its columns mapped by ``ColumnPlan`` (or an explicit mapping).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings

from catalogs.importers.base import (
    MAX_TITLE_CHARS,
    ColumnPlan,
    FileRejected,
    ParsedChunk,
    ParsedRow,
    RowError,
    RowResult,
    build_item,
    column_key,
)
from catalogs.importers.values import parse_price, strip_html

# Meta rejects lines over 5,242,880 bytes; a field that size is certainly not a catalog.
csv.field_size_limit(5_242_880)
SNIFF_BYTES = 64 * 1024
DELIMITERS = (",", "\t", ";", "|")
FAQ_QUESTION_KEYS = ("question", "q", "faq_question", "title")
FAQ_ANSWER_KEYS = ("answer", "a", "faq_answer", "response")


def sniff_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, UTF-16 by BOM, else Windows-1252.

    The whole file is checked (a streaming pass at disk speed) because a cp1252 export is often plain ASCII
    for its first megabytes and only the 40,000th row has "Café".
    """
    with path.open("rb") as f:
        head = f.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        f.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def sniff_delimiter(sample: str) -> str:
    """The delimiter of the header line (the first line not starting with ``#``): the most frequent candidate."""
    for line in sample.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", '"#')):
            continue
        counts = {d: line.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","
    return ","


def csv_rows(path: Path, *, delimiter: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """The records of a delimited file, numbered from 1 as a spreadsheet numbers its rows."""
    encoding = sniff_encoding(path)
    # cp1252 leaves five bytes undefined: replace them rather than reject a whole file for one odd byte.
    with path.open(
        encoding=encoding, errors="replace" if encoding == "cp1252" else "strict", newline=""
    ) as f:
        sample = f.read(SNIFF_BYTES)
        f.seek(0)
        # Bounded memory: no field over CATALOG_MAX_FIELD_BYTES, no physical line over
        # CATALOG_MAX_RECORD_BYTES (csv reads whole lines from its iterator).
        csv.field_size_limit(settings.CATALOG_MAX_FIELD_BYTES)
        reader = csv.reader(
            _bounded_lines(f, settings.CATALOG_MAX_RECORD_BYTES),
            delimiter=delimiter or sniff_delimiter(sample),
        )
        number = 0
        try:
            for number, record in enumerate(reader, start=1):
                yield number, record
        except csv.Error as exc:
            raise FileRejected(f"row {number + 1}: the file is not valid CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise FileRejected(f"row {number + 1}: the file is not valid {encoding} text") from exc


def _bounded_lines(f: TextIO, limit: int) -> Iterator[str]:
    number = 0
    while line := f.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise FileRejected(
                f"line {number} is longer than {limit:,} characters (CATALOG_MAX_RECORD_BYTES)"
            )
        yield line


def _find(keys: dict[str, str], candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        if candidate in keys:
            return keys[candidate]
    return None


class Table:
    """A table whose header has been read; ``kind`` says whether it holds items or FAQ chunks."""

    def __init__(
        self, rows: Iterator[tuple[int, list[str]]], mapping: Mapping[str, str] | None = None
    ) -> None:
        self.rows = rows
        self.mapping = dict(mapping or {})
        self.header: list[str] = []
        for _number, cells in rows:
            first = cells[0].strip().lstrip("\ufeff") if cells else ""
            if first.startswith("#") or not any(c.strip() for c in cells):
                continue  # Meta template description rows ("# Required | ..."), blank lines
            self.header = [c.strip().lstrip("\ufeff") for c in cells]
            break
        if not self.header:
            raise FileRejected("the file has no header row")
        self.keys = {column_key(name): name for name in reversed(self.header) if name}
        self.shopify = ("handle" in self.keys or "url_handle" in self.keys) and "title" in self.keys
        self.faq = (
            not self.shopify
            and _find(self.keys, FAQ_QUESTION_KEYS[:3]) is not None
            and _find(self.keys, FAQ_ANSWER_KEYS) is not None
        )
        self.kind = "document" if self.faq else "items"
        self.plan = ColumnPlan.from_header(self.header, self.mapping)
        if not self.shopify and not self.faq and self.plan.missing_required():
            missing = " and ".join(
                "an id" if f == "external_id" else "a title" for f in self.plan.missing_required()
            )
            raise FileRejected(
                f"no column for {missing} was found (columns: {', '.join(self.header[:20])}); "
                "give a column mapping or use Meta/Google/Shopify column names"
            )

    def _records(self) -> Iterator[tuple[int, dict[str, str]]]:
        width = len(self.header)
        for number, cells in self.rows:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            yield number, dict(zip(self.header, cells, strict=False))

    def results(self) -> Iterator[RowResult]:
        if self.shopify:
            yield from shopify_results(self._records(), self.keys)
        elif self.faq:
            question = _find(self.keys, FAQ_QUESTION_KEYS)
            answer = _find(self.keys, FAQ_ANSWER_KEYS)
            assert question and answer
            for number, record in self._records():
                q, a = strip_html(record[question]), strip_html(record[answer])
                if not q:
                    yield RowError(number, question, "missing question")
                elif not a:
                    yield RowError(number, answer, "missing answer")
                else:
                    yield ParsedChunk(number, q[:500], a)
        else:
            for number, record in self._records():
                yield build_item(record, self.plan, number)


# --- Shopify ------------------------------------------------------------------------------------------------

SHOPIFY = {
    "handle": ("handle", "url_handle"),
    "title": ("title",),
    "body": ("body_(html)", "description", "body_html"),
    "vendor": ("vendor",),
    "type": ("type", "product_category", "product_type"),
    "tags": ("tags",),
    "status": ("status",),
    "sku": ("variant_sku", "sku"),
    "barcode": ("variant_barcode", "barcode"),
    "price": ("variant_price", "price"),
    "compare_at": ("variant_compare_at_price", "compare_at_price", "compare_at_price_"),
    "qty": ("variant_inventory_qty", "inventory_quantity"),
    "tracker": ("variant_inventory_tracker", "inventory_tracker"),
    "policy": ("variant_inventory_policy", "continue_selling_when_out_of_stock"),
    "image": ("image_src", "product_image_url"),
    "variant_image": ("variant_image", "variant_image_url"),
    "url": ("url", "product_url", "online_store_url"),
}


def _shopify_columns(keys: dict[str, str]) -> dict[str, str | None]:
    columns: dict[str, str | None] = {name: _find(keys, candidates) for name, candidates in SHOPIFY.items()}
    for n in (1, 2, 3):
        columns[f"option{n}_name"] = _find(keys, (f"option{n}_name",))
        columns[f"option{n}_value"] = _find(keys, (f"option{n}_value",))
    return columns


def shopify_results(
    records: Iterator[tuple[int, dict[str, str]]], keys: dict[str, str]
) -> Iterator[RowResult]:
    """Consecutive rows sharing a handle -> one item with its variants (exports keep a handle's rows together)."""
    columns = _shopify_columns(keys)
    group: list[tuple[int, dict[str, str]]] = []
    handle_column = columns["handle"]
    assert handle_column is not None
    for number, record in records:
        handle = record[handle_column].strip()
        if not handle:
            yield RowError(number, handle_column, "missing handle")
            continue
        if group and handle != group[0][1][handle_column].strip():
            yield from _shopify_product(group, columns)
            group = []
        group.append((number, record))
    if group:
        yield from _shopify_product(group, columns)


def _get(record: dict[str, str], column: str | None) -> str:
    return record.get(column, "").strip() if column else ""


def _shopify_product(
    group: list[tuple[int, dict[str, str]]], c: dict[str, str | None]
) -> Iterator[RowResult]:
    first_number, first = group[0]
    handle = _get(first, c["handle"])
    title = strip_html(_get(first, c["title"]))
    if not title:
        yield RowError(first_number, c["title"] or "Title", "missing title")
        return
    option_names = [_get(first, c[f"option{n}_name"]) for n in (1, 2, 3)]
    variants: list[dict[str, Any]] = []
    images: list[str] = []
    for number, record in group:
        image = _get(record, c["image"])
        if image and image not in images:
            images.append(image)
        options = {
            name: value
            for name, value in ((option_names[n - 1], _get(record, c[f"option{n}_value"])) for n in (1, 2, 3))
            if name and value and value != "Default Title"
        }
        raw_price = _get(record, c["price"])
        sku = _get(record, c["sku"])
        if not raw_price and not sku and not options:
            continue  # an image-only row
        try:
            variant_price, _ = parse_price(raw_price)
            compare_at, _ = parse_price(_get(record, c["compare_at"]))
        except ValueError as exc:
            yield RowError(number, c["price"] or "Variant Price", str(exc))
            continue
        qty_text = _get(record, c["qty"])
        policy = _get(record, c["policy"]).lower()
        tracked = bool(_get(record, c["tracker"])) or bool(qty_text)
        qty = int(qty_text) if re.fullmatch(r"-?\d+", qty_text) else None
        available = (not tracked) or policy in ("continue", "true", "yes") or (qty is not None and qty > 0)
        variant: dict[str, Any] = {
            "sku": sku,
            "options": options,
            "price": str(variant_price) if variant_price is not None else None,
            "compare_at_price": str(compare_at) if compare_at is not None else None,
            "available": available,
        }
        if qty is not None:
            variant["inventory_quantity"] = qty
        if barcode := _get(record, c["barcode"]):
            variant["barcode"] = barcode
        if variant_image := _get(record, c["variant_image"]):
            variant["image_url"] = variant_image
        variants.append(variant)
    priced = [v for v in variants if v["price"] is not None]
    cheapest = min(priced, key=lambda v: Decimal(v["price"])) if priced else None
    price: Decimal | None = Decimal(cheapest["price"]) if cheapest else None
    sale_price: Decimal | None = None
    if (
        cheapest
        and cheapest["compare_at_price"]
        and Decimal(cheapest["compare_at_price"]) > Decimal(cheapest["price"])
    ):
        price, sale_price = Decimal(cheapest["compare_at_price"]), Decimal(cheapest["price"])
    status = _get(first, c["status"]).lower()
    if status in ("archived", "draft"):
        availability = "discontinued"
    else:
        availability = "in_stock" if not variants or any(v["available"] for v in variants) else "out_of_stock"
    attributes: dict[str, str] = {}
    for name in option_names:
        if name and name.lower() in ("size", "color", "colour", "material", "style"):
            values = list(dict.fromkeys(v["options"][name] for v in variants if name in v["options"]))
            if values:
                attributes["color" if name.lower() == "colour" else name.lower()] = ", ".join(values)
    if tags := _get(first, c["tags"]):
        attributes["tags"] = tags
    if len(images) > 1:
        attributes["additional_image_links"] = ", ".join(images[1:10])
    yield ParsedRow(
        first_number,
        {
            "external_id": handle[:200],
            "item_group_id": handle[:200],
            "title": title[:MAX_TITLE_CHARS],
            "description": strip_html(_get(first, c["body"])),
            "price": price,
            "sale_price": sale_price,
            "currency": "",  # Shopify exports carry store-currency prices without a code
            "availability": availability,
            "brand": _get(first, c["vendor"])[:200],
            "category": _get(first, c["type"])[:500],
            "url": _get(first, c["url"])[:2000],
            "image_url": images[0][:2000] if images else "",
            "attributes": attributes,
            "variants": variants if len(variants) > 1 or (variants and variants[0]["options"]) else [],
        },
    )
