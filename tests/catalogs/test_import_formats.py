"""JSON, JSON Lines, XLSX, RSS/Atom feeds and FAQ/policy documents."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook

from catalogs.importers import detect_format, parse_availability, parse_price, strip_html
from catalogs.importers.documents import split_text
from catalogs.models import Chunk, Document, Item
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("9.99 USD", (Decimal("9.99"), "USD")),
        ("USD 9.99", (Decimal("9.99"), "USD")),
        ("$9.99", (Decimal("9.99"), "USD")),
        ("9,99 EUR", (Decimal("9.99"), "EUR")),
        ("1.234,56 EUR", (Decimal("1234.56"), "EUR")),
        ("1,234.56 usd", (Decimal("1234.56"), "USD")),
        ("€ 12", (Decimal("12.00"), "EUR")),
        ("£1,299", (Decimal("1299.00"), "GBP")),
        ("", (None, "")),
    ],
)
def test_parse_price(raw, expected):
    assert parse_price(raw) == expected


@pytest.mark.parametrize("raw", ["ten", "9.99.99 USD", "-5 USD", "1,2,3"])
def test_parse_price_refuses_non_prices(raw):
    with pytest.raises(ValueError):
        parse_price(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("in stock", "in_stock"),
        ("in_stock", "in_stock"),
        ("In Stock", "in_stock"),
        ("https://schema.org/InStock", "in_stock"),
        ("out of stock", "out_of_stock"),
        ("OUT_OF_STOCK", "out_of_stock"),
        ("sold out", "out_of_stock"),
        ("pre-order", "preorder"),
        ("available for order", "backorder"),
        ("discontinued", "discontinued"),
    ],
)
def test_parse_availability(raw, expected):
    assert parse_availability(raw) == expected


def test_strip_html():
    assert strip_html("<p>Warm &amp; dry.</p><ul><li>Merino</li><li>Nylon</li></ul><style>p{}</style>") == (
        "Warm & dry.\nMerino\nNylon"
    )


def test_json_array_with_nested_values(import_catalog):
    business = BusinessFactory()
    products = [
        {
            "id": "J1",
            "title": "Camp chair",
            "price": {"amount": 49.5, "currency": "EUR"},
            "availability": "in stock",
            "attributes": {"color": "olive", "material": "aluminium"},
            "image": [{"url": "https://x.example/c.jpg"}],
        },
        {"id": "J2", "title": "Camp table", "price": "89.00 EUR", "in_stock": False},
        {"title": "No id"},
        "not an object",
    ]
    imp = import_catalog(business, json.dumps(products, indent=2), filename="products.json")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "json", 2, 2)
    assert imp.error_report == [
        {"row": 3, "column": "id", "reason": "missing id"},
        {"row": 4, "column": "", "reason": "not a JSON object"},
    ]
    chair = Item.objects.get(business=business, external_id="J1")
    assert (chair.price, chair.currency, chair.image_url) == (
        Decimal("49.50"),
        "EUR",
        "https://x.example/c.jpg",
    )
    assert chair.attributes == {"color": "olive", "material": "aluminium"}
    assert Item.objects.get(business=business, external_id="J2").availability == "out_of_stock"


def test_json_array_streams_across_read_buffers(import_catalog):
    business = BusinessFactory()
    # ~300 KB: elements straddle the 64 KB read chunks of the streaming decoder.
    products = [
        {"id": f"P{n}", "title": f"Item {n}", "description": "x" * 1000, "price": "1.00 USD"}
        for n in range(300)
    ]
    imp = import_catalog(business, json.dumps(products), filename="big.json")
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 300, 0)


def test_json_object_wrapping_products(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(
        business, json.dumps({"products": [{"sku": "W1", "name": "Wrapped", "price": 3}]}), filename="x.json"
    )
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    assert Item.objects.get(business=business, external_id="W1").price == Decimal("3.00")


def test_jsonl_with_a_broken_line(import_catalog):
    business = BusinessFactory()
    text = '{"id": "L1", "title": "Line one"}\n\n{"id": "L2", "title": \n{"id": "L3", "title": "Line three", "price": "2 USD"}\n'
    imp = import_catalog(business, text, filename="feed.jsonl")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "jsonl", 2, 1)
    assert imp.error_report[0]["row"] == 3
    assert imp.error_report[0]["reason"].startswith("not valid JSON")


def xlsx_bytes(sheets):
    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_xlsx_first_sheet_with_template_row_and_numbers(import_catalog):
    business = BusinessFactory()
    data = xlsx_bytes(
        {
            "Products": [
                ["# Required | id", "# Required | title", "# Required | price", "# Optional"],
                ["id", "title", "price", "availability"],
                ["X1", "Trekking pole", 29.9, "in stock"],
                [1002, "Gaiters", "19.00 EUR", "out of stock"],
            ],
            "Other": [["id", "title"], ["Z", "Not this sheet"]],
        }
    )
    imp = import_catalog(business, data, filename="catalog.xlsx")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "xlsx", 2, 0)
    assert Item.objects.get(business=business, external_id="X1").price == Decimal("29.90")
    assert Item.objects.get(business=business, external_id="1002").availability == "out_of_stock"


def test_xlsx_named_sheet(import_catalog):
    business = BusinessFactory()
    data = xlsx_bytes({"Readme": [["hello"]], "Feed": [["id", "title"], ["S1", "From the named sheet"]]})
    imp = import_catalog(business, data, filename="catalog.xlsx", sheet="Feed")
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    missing = import_catalog(business, data, filename="catalog.xlsx", sheet="Nope")
    assert (missing.state, missing.error_message) == (
        "failed",
        "no sheet named 'Nope' (sheets: Readme, Feed)",
    )


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">
<channel>
<title>Trail shop</title><link>https://shop.example</link><description>feed</description>
<item>
  <g:id>R1</g:id><g:title>Merino beanie</g:title><g:description>Warm &amp; soft</g:description>
  <g:link>https://shop.example/r1</g:link><g:image_link>https://shop.example/r1.jpg</g:image_link>
  <g:availability>in stock</g:availability><g:price>24.00 EUR</g:price><g:brand>Woolly</g:brand>
  <g:google_product_category>Apparel &amp; Accessories &gt; Clothing Accessories &gt; Hats</g:google_product_category>
  <g:shipping><g:country>DE</g:country><g:price>4.95 EUR</g:price></g:shipping>
  <g:color>grey</g:color>
</item>
<item>
  <g:id>R2</g:id><g:title>Buff</g:title><g:availability>out_of_stock</g:availability><g:price>bad</g:price>
</item>
</channel>
</rss>
"""

ATOM = """<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
<title>Feed</title>
<entry>
  <id>tag:shop.example,2024:a1</id><g:id>A1</g:id><title>Dry bag 20 L</title>
  <link rel="alternate" href="https://shop.example/a1"/><summary>Roll-top</summary>
  <g:price>15.00 USD</g:price><g:availability>preorder</g:availability>
</entry>
</feed>
"""


def test_rss_feed_with_g_namespace(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, RSS, filename="feed.xml")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "xml", 1, 1)
    assert imp.error_report == [{"row": 2, "column": "price", "reason": "not a price: 'bad'"}]
    beanie = Item.objects.get(business=business, external_id="R1")
    assert (beanie.title, beanie.description, beanie.price, beanie.brand) == (
        "Merino beanie",
        "Warm & soft",
        Decimal("24.00"),
        "Woolly",
    )
    assert beanie.category == "Apparel & Accessories > Clothing Accessories > Hats"
    assert beanie.url == "https://shop.example/r1"
    assert beanie.attributes == {"shipping": "DE:4.95 EUR", "color": "grey"}


def test_atom_feed(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, ATOM, filename="feed.atom")
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    bag = Item.objects.get(business=business, external_id="A1")
    assert (bag.title, bag.url, bag.availability, bag.price) == (
        "Dry bag 20 L",
        "https://shop.example/a1",
        "preorder",
        Decimal("15.00"),
    )


FAQ_MD = """# Trail shop help

## Shipping
We ship within Germany in 1-2 working days. Orders over 50 EUR ship free.

## Returns
### Refunds
Return unused items within 30 days for a full refund.

### Exchanges
Exchanges are free; we send the new size when the old one arrives.
"""


def test_markdown_faq_chunked_by_headings(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, FAQ_MD, filename="faq.md")
    assert (imp.state, imp.format, imp.created_count) == ("succeeded", "markdown", 3)
    document = Document.objects.get(business=business)
    assert (document.title, document.kind, document.filename) == ("Trail shop help", "faq", "faq.md")
    chunks = list(Chunk.objects.filter(document=document).values_list("ordinal", "heading", "text"))
    assert chunks == [
        (
            0,
            "Trail shop help > Shipping",
            "We ship within Germany in 1-2 working days. Orders over 50 EUR ship free.",
        ),
        (1, "Trail shop help > Returns > Refunds", "Return unused items within 30 days for a full refund."),
        (
            2,
            "Trail shop help > Returns > Exchanges",
            "Exchanges are free; we send the new size when the old one arrives.",
        ),
    ]
    # Re-importing with one section changed keeps the two unchanged chunks (and their vectors).
    again = import_catalog(business, FAQ_MD.replace("30 days", "60 days"), filename="faq.md")
    assert (again.created_count, again.unchanged_count, again.retired_count) == (1, 2, 1)
    assert Document.objects.filter(business=business).count() == 1
    assert (
        Chunk.objects.get(document=document, ordinal=1).text
        == "Return unused items within 60 days for a full refund."
    )


def test_long_text_is_split_by_size(import_catalog):
    business = BusinessFactory()
    paragraph = "Our warranty covers manufacturing defects for two years. " * 12
    imp = import_catalog(business, "\n\n".join([paragraph] * 4), filename="warranty-policy.txt")
    assert imp.state == "succeeded"
    chunks = list(Chunk.objects.filter(business=business))
    assert len(chunks) == 4
    assert all(len(c.text) <= 1200 for c in chunks)
    assert Document.objects.get(business=business).kind == "policy"


def test_split_text_keeps_the_order_around_an_overlong_sentence():
    # A sentence longer than a chunk used to be emitted before the sentences that came ahead of it.
    run_on = "word " * 40
    text = f"First sentence. {run_on.strip()}. Last one.\n\nNext paragraph."
    pieces = split_text(text, max_chars=60)
    assert "".join(pieces).replace("\n\n", " ").replace(" ", "") == text.replace("\n\n", " ").replace(" ", "")
    assert pieces[0].startswith("First sentence.")
    assert all(len(piece) <= 60 for piece in pieces)


def test_faq_csv_of_question_answer_pairs(import_catalog):
    business = BusinessFactory()
    text = "question,answer\nDo you ship to Austria?,Yes: 2-4 days and 9.90 EUR.\nAre you open on Sunday?,\n"
    imp = import_catalog(business, text, filename="questions.csv")
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 1, 1)
    assert imp.error_report == [{"row": 3, "column": "answer", "reason": "missing answer"}]
    chunk = Chunk.objects.get(business=business)
    assert (chunk.heading, chunk.text) == ("Do you ship to Austria?", "Yes: 2-4 days and 9.90 EUR.")


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with text, written by hand (no PDF writer library is installed)."""
    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_policy(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(
        business, minimal_pdf(["Returns policy", "Return within 30 days."]), filename="returns.pdf"
    )
    assert (imp.state, imp.format, imp.created_count) == ("succeeded", "pdf", 1)
    chunk = Chunk.objects.get(business=business)
    assert chunk.heading == "Page 1"
    assert "Return within 30 days." in chunk.text
    assert Document.objects.get(business=business).kind == "policy"


def test_format_detection_from_content_and_name(tmp_path: Path):
    cases = {
        "a.csv": b"id,title\n1,x\n",
        "b.txt": b"id\ttitle\n1\tx\n",
        "c.dat": b"[{}]",
        "d.dat": b'{"id": 1}\n',
        "e.dat": b"<?xml version='1.0'?><rss/>",
        "f.dat": b"%PDF-1.4",
        "g.md": b"# Hi\ntext",
        "h": b"id;title\n1;x\n",
    }
    got = {}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        got[name] = detect_format(path, name)
    assert got == {
        "a.csv": "csv",
        "b.txt": "tsv",
        "c.dat": "json",
        "d.dat": "jsonl",
        "e.dat": "xml",
        "f.dat": "pdf",
        "g.md": "markdown",
        "h": "csv",
    }


def test_gzipped_feed_is_unpacked(import_catalog):
    import gzip

    business = BusinessFactory()
    imp = import_catalog(business, gzip.compress(RSS.encode()), filename="feed.xml.gz")
    assert (imp.state, imp.format, imp.created_count, imp.original_filename) == (
        "succeeded",
        "xml",
        1,
        "feed.xml.gz",
    )


def test_gzip_bomb_is_refused(import_catalog, settings):
    import gzip

    business = BusinessFactory()
    data = gzip.compress(b"id,title\n" + b"0" * 5_000_000)
    settings.CATALOG_MAX_UPLOAD_BYTES = 1_000_000
    assert len(data) < 1_000_000
    imp = import_catalog(business, data, filename="catalog.csv.gz")
    assert (imp.state, imp.error_message) == (
        "failed",
        "the gzip file inflates past the limit of 1,000,000 bytes",
    )
    assert Item.objects.filter(business=business).count() == 0
