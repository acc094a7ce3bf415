"""A price "on request" (POA, auf Anfrage, sur demande...) imports as an item with no price, in every format;
an empty price behaves as before, and a price that is neither still gets its row error."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from openpyxl import Workbook

from catalogs.importers import parse_price
from catalogs.importers.values import PRICE_ON_REQUEST_PHRASES, price_on_request
from catalogs.models import Item
from tests.factories import BusinessFactory, MembershipFactory

pytestmark = pytest.mark.django_db

# The phrases the brief names, spelled as a shop would write them (the module's list must cover them all).
PHRASES = [
    "on request",
    "price on request",
    "upon request",
    "POA",
    "P.O.A.",
    "price upon application",
    "call for price",
    "ask for price",
    "contact us",
    "auf Anfrage",
    "Preis auf Anfrage",
    "a.A.",
    "sur demande",
    "prix sur demande",
    "su richiesta",
    "prezzo su richiesta",
    "a consultar",
    "bajo pedido",
    "precio a consultar",
    "op aanvraag",
    "prijs op aanvraag",
]


def _csv(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["id,title,price,sale_price"]
    for row in rows:
        lines.append(",".join(f'"{cell}"' for cell in row))
    return "\n".join(lines) + "\n"


def _prices(business) -> dict[str, tuple[Decimal | None, Decimal | None, str]]:
    return {
        i.external_id: (i.price, i.sale_price, i.currency)
        for i in Item.objects.filter(business=business).order_by("external_id")
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("on request", (None, "")),
        ("  On Request.  ", (None, "")),
        ("(POA)", (None, "")),
        ("p. o. a.", (None, "")),
        ("PRICE: ON REQUEST!", (None, "")),
        ("on-request", (None, "")),
        ("on request EUR", (None, "EUR")),
        ("EUR POA", (None, "EUR")),
        ("Preis auf Anfrage CHF", (None, "CHF")),
        ("€ auf Anfrage", (None, "EUR")),
        ("sur demande €", (None, "EUR")),
        ("ask for price eur", (None, "EUR")),
        ("9.99 USD", (Decimal("9.99"), "USD")),
        ("", (None, "")),
    ],
)
def test_parse_price_reads_on_request_with_spacing_punctuation_and_currency(raw, expected):
    assert parse_price(raw) == expected


@pytest.mark.parametrize(
    "raw", ["abc", "12,34,56", "AA", "request", "on request 12", "not on request", "on requests"]
)
def test_near_misses_are_still_not_prices(raw):
    assert price_on_request(raw) == (False, "")
    with pytest.raises(ValueError, match="not a price"):
        parse_price(raw)


def test_every_phrase_is_in_the_importers_list():
    assert all(price_on_request(phrase) == (True, "") for phrase in PRICE_ON_REQUEST_PHRASES)
    assert all(price_on_request(phrase.upper()) == (True, "") for phrase in PHRASES)


def test_csv_every_phrase_imports_with_no_price(import_catalog):
    business = BusinessFactory()
    rows = [(f"P{n:02d}", f"Item {n}", phrase, "") for n, phrase in enumerate(PHRASES)]
    imp = import_catalog(business, _csv(rows))
    assert (imp.state, imp.created_count, imp.failed_count, imp.error_report) == (
        "succeeded",
        len(PHRASES),
        0,
        [],
    )
    items = Item.objects.filter(business=business)
    assert items.count() == len(PHRASES)
    assert [(i.price, i.sale_price, i.currency, i.is_active) for i in items] == [
        (None, None, "", True)
    ] * len(PHRASES)
    item = Item.objects.get(business=business, external_id="P09")
    assert (item.title, item.availability) == ("Item 9", "in_stock")


def test_csv_currency_beside_the_phrase_is_kept(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(
        business, _csv([("C1", "Chair", "on request EUR", ""), ("C2", "Desk", "GBP POA", "")])
    )
    assert (imp.created_count, imp.failed_count) == (2, 0)
    assert _prices(business) == {"C1": (None, None, "EUR"), "C2": (None, None, "GBP")}


def test_sale_price_on_request_is_no_sale_price(import_catalog):
    business = BusinessFactory()
    text = _csv(
        [
            ("S1", "Lamp", "49.00 EUR", "on request"),
            ("S2", "Rug", "120.00 EUR", "Prix sur demande"),
            ("S3", "Vase", "POA", "POA"),
        ]
    )
    imp = import_catalog(business, text)
    assert (imp.created_count, imp.failed_count) == (3, 0)
    assert _prices(business) == {
        "S1": (Decimal("49.00"), None, "EUR"),
        "S2": (Decimal("120.00"), None, "EUR"),
        "S3": (None, None, ""),
    }


def test_empty_price_is_unchanged_and_garbage_is_still_a_row_error(import_catalog):
    # No format requires a price today: an empty cell imports with no price (tests/catalogs/test_import_csv.py
    # pins this too). Text that is neither a price nor "on request" is a row error with the column and text.
    business = BusinessFactory()
    text = _csv(
        [
            ("E1", "Empty price", "", ""),
            ("G1", "Garbage", "abc", ""),
            ("G2", "Bad groups", "12,34,56", ""),
            ("G3", "Garbage sale", "10.00 EUR", "abc"),
            ("R1", "On request", "on request", ""),
        ]
    )
    imp = import_catalog(business, text)
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 2, 3)
    assert imp.error_report == [
        {"row": 3, "column": "price", "reason": "not a price: 'abc'"},
        {"row": 4, "column": "price", "reason": "not a price: '12,34,56'"},
        {"row": 5, "column": "sale_price", "reason": "not a price: 'abc'"},
    ]
    assert _prices(business) == {"E1": (None, None, ""), "R1": (None, None, "")}


def test_tsv_and_a_reimport_from_price_to_on_request(import_catalog):
    business = BusinessFactory()
    first = import_catalog(business, "id\ttitle\tprice\nT1\tSofa\t899.00 EUR\n", filename="feed.tsv")
    assert (first.format, first.created_count) == ("tsv", 1)
    # The same item later priced "on request": the upsert (COPY + INSERT ... ON CONFLICT) writes NULL.
    second = import_catalog(business, "id\ttitle\tprice\nT1\tSofa\tauf Anfrage\n", filename="feed.tsv")
    assert (second.created_count, second.updated_count, second.failed_count) == (0, 1, 0)
    # The second file names no currency, so the row's currency is rewritten empty along with the price.
    assert _prices(business) == {"T1": (None, None, "")}


def _xlsx(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_xlsx_on_request(import_catalog):
    business = BusinessFactory()
    data = _xlsx(
        [
            ["# Required | id", "# Required | title", "# Required | 9.99 USD", "# Optional"],
            ["id", "title", "price", "sale_price"],
            ["X1", "Chandelier", "Price on request", None],
            ["X2", "Mirror", 59.5, "on request"],
            ["X3", "Bad", "abc", None],
        ]
    )
    imp = import_catalog(business, data, filename="catalog.xlsx")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "xlsx", 2, 1)
    assert imp.error_report == [{"row": 5, "column": "price", "reason": "not a price: 'abc'"}]
    assert _prices(business) == {"X1": (None, None, ""), "X2": (Decimal("59.50"), None, "")}


def test_json_and_jsonl_on_request(import_catalog):
    business = BusinessFactory()
    products = [
        {"id": "J1", "title": "Yacht charter", "price": "POA"},
        {"id": "J2", "title": "Piano", "price": {"amount": "on request", "currency": "EUR"}},
        {"id": "J3", "title": "Clock", "price": "25.00 EUR", "sale_price": "su richiesta"},
    ]
    imp = import_catalog(business, json.dumps(products), filename="feed.json")
    assert (imp.format, imp.created_count, imp.failed_count) == ("json", 3, 0)
    assert _prices(business) == {
        "J1": (None, None, ""),
        "J2": (None, None, "EUR"),
        "J3": (Decimal("25.00"), None, "EUR"),
    }
    other = BusinessFactory()
    lines = '{"id": "L1", "title": "Boat", "price": "op aanvraag"}\n'
    imp = import_catalog(other, lines, filename="feed.jsonl")
    assert (imp.format, imp.created_count, imp.failed_count) == ("jsonl", 1, 0)
    assert _prices(other) == {"L1": (None, None, "")}


def test_rss_feed_and_shopify_export_on_request(import_catalog):
    business = BusinessFactory()
    rss = (
        '<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0" version="2.0"><channel>'
        "<item><g:id>R1</g:id><g:title>Sculpture</g:title><g:price>Price on request</g:price></item>"
        "</channel></rss>"
    )
    imp = import_catalog(business, rss, filename="feed.xml")
    assert (imp.format, imp.created_count, imp.failed_count) == ("xml", 1, 0)
    assert _prices(business) == {"R1": (None, None, "")}

    shop = BusinessFactory()
    shopify = (
        "Handle,Title,Option1 Name,Option1 Value,Variant SKU,Variant Price,Variant Compare At Price\n"
        "bespoke-table,Bespoke table,Size,S,BT-S,on request,\n"
        "bespoke-table,,,L,BT-L,on request,on request\n"
    )
    imp = import_catalog(shop, shopify)
    assert (imp.created_count, imp.failed_count) == (1, 0)
    table = Item.objects.get(business=shop)
    assert (table.external_id, table.price, table.sale_price) == ("bespoke-table", None, None)
    assert [(v["sku"], v["price"], v["compare_at_price"]) for v in table.variants] == [
        ("BT-S", None, None),
        ("BT-L", None, None),
    ]


def test_import_into_one_business_leaves_another_untouched(import_catalog):
    a, b = BusinessFactory(), BusinessFactory()
    import_catalog(b, _csv([("SAME", "B's item", "10.00 EUR", "")]))
    before = list(Item.objects.filter(business=b).values_list("external_id", "price", "updated_at"))
    imp = import_catalog(a, _csv([("SAME", "A's item", "on request", "")]), mode="full")
    assert (imp.state, imp.created_count, imp.retired_count) == ("succeeded", 1, 0)
    assert _prices(a) == {"SAME": (None, None, "")}
    assert list(Item.objects.filter(business=b).values_list("external_id", "price", "updated_at")) == before
    assert Item.objects.get(business=b).title == "B's item"


def test_dashboard_shows_price_on_request(import_catalog):
    membership = MembershipFactory()
    business = membership.business
    import_catalog(business, _csv([("D1", "Harp", "on request", ""), ("D2", "Drum", "80.00 EUR", "")]))
    client = Client()
    client.force_login(membership.user)
    listing = client.get(reverse("dashboard:catalog_items", kwargs={"slug": business.slug}))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert html.count("Price on request") == 1
    assert "80.00 EUR" in html
    harp = Item.objects.get(business=business, external_id="D1")
    detail = client.get(reverse("dashboard:catalog_item", kwargs={"slug": business.slug, "item_id": harp.pk}))
    assert detail.status_code == 200
    assert "<tr><th>Price</th><td>Price on request</td></tr>" in detail.content.decode()
