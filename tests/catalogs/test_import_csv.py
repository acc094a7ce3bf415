"""CSV/TSV imports: Meta, Google Merchant and Shopify columns, and the messy files real shops export."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalogs.models import Item
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db


def items(business):
    return {i.external_id: i for i in Item.objects.filter(business=business)}


def test_meta_feed_with_template_rows(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, SMALL_CATALOG_CSV)
    assert (imp.state, imp.format, imp.error_message) == ("succeeded", "csv", "")
    assert (imp.created_count, imp.updated_count, imp.unchanged_count, imp.failed_count) == (3, 0, 0, 0)
    assert imp.rows_done == 3
    got = items(business)
    assert sorted(got) == ["BAG-0C", "STOVE-1", "TENT-2P"]
    tent = got["TENT-2P"]
    assert tent.title == "Ridgeline 2-person tent"
    assert (tent.price, tent.currency, tent.availability) == (Decimal("249.00"), "EUR", "in_stock")
    assert (tent.brand, tent.category, tent.url) == ("Ridgeline", "tents", "https://shop.example/p/tent-2p")
    assert tent.image_url == "https://shop.example/img/tent-2p.jpg"
    assert tent.attributes == {"color": "green"}
    assert got["BAG-0C"].availability == "out_of_stock"
    assert got["STOVE-1"].description == "Folding canister stove, 2.7 kW, boils a litre in 4 minutes."
    assert got["STOVE-1"].attributes == {}
    assert all(i.embedding is None and i.is_active for i in got.values())


def test_retrieval_eval_shop_file_imports_every_row(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, __import__("pathlib").Path("/work/shared/data/retrieval-eval/bike.csv"))
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 81, 0)
    bike = Item.objects.get(business=business, external_id="VV-BK-001")
    assert (bike.price, bike.currency, bike.category) == (Decimal("549.00"), "EUR", "bikes")
    assert bike.attributes == {"size": "S", "color": "graphite", "condition": "new"}


def test_google_merchant_tsv_with_underscored_availability_and_spaced_headers(import_catalog):
    business = BusinessFactory()
    text = (
        "id\ttitle\tdescription\tavailability\tprice\tsale price\timage link\tlink\tbrand\tgtin\n"
        "G1\tTrail runner\tLight shoe\tin_stock\t120.00 USD\t99.00 USD\thttps://x.example/1.jpg\thttps://x.example/1\tFleet\t0123456789012\n"
        "G2\tRain shell\tWaterproof jacket\tout_of_stock\t$89.50\t\thttps://x.example/2.jpg\thttps://x.example/2\tFleet\t\n"
        "G3\tHeadlamp\t400 lumens\tpreorder\t35 USD\t\t\t\tLumo\t\n"
        "G4\tBottle\t1 litre\tbackorder\t12.00 USD\t\t\t\tLumo\t\n"
    )
    imp = import_catalog(business, text, filename="feed.txt")
    assert (imp.state, imp.format, imp.created_count, imp.failed_count) == ("succeeded", "tsv", 4, 0)
    got = items(business)
    assert (got["G1"].price, got["G1"].sale_price, got["G1"].currency) == (
        Decimal("120.00"),
        Decimal("99.00"),
        "USD",
    )
    assert got["G1"].image_url == "https://x.example/1.jpg"
    assert got["G1"].attributes == {"gtin": "0123456789012"}
    assert (got["G2"].availability, got["G2"].price, got["G2"].currency) == (
        "out_of_stock",
        Decimal("89.50"),
        "USD",
    )
    assert got["G3"].availability == "preorder"
    assert got["G4"].availability == "backorder"


def test_semicolon_cp1252_european_prices_and_quoted_newlines(import_catalog):
    business = BusinessFactory()
    text = (
        "id;title;description;availability;price\r\n"
        'K1;Café au lait mug;"Stoneware.\r\nDishwasher safe.";in stock;9,99 EUR\r\n'
        "K2;Crème brûlée set;Four ramekins;auf Lager;1.234,56 EUR\r\n"
        "K3;Teekanne;Glas;available;12 EUR\r\n"
    )
    imp = import_catalog(business, text.encode("cp1252"), filename="export.csv")
    assert imp.state == "succeeded"
    assert (imp.created_count, imp.failed_count) == (2, 1)
    assert imp.error_report == [
        {"row": 3, "column": "availability", "reason": "unknown availability 'auf Lager'"}
    ]
    got = items(business)
    assert got["K1"].title == "Café au lait mug"
    assert got["K1"].description == "Stoneware.\r\nDishwasher safe."
    assert got["K1"].price == Decimal("9.99")
    assert got["K3"].price == Decimal("12.00")


def test_utf8_bom_and_google_style_headers(import_catalog):
    business = BusinessFactory()
    text = "\ufeffID,Title,Price,Availability\nA-1,Zoë's wool socks,14.00 GBP,In Stock\n"
    imp = import_catalog(business, text.encode("utf-8"))
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    sock = Item.objects.get(business=business, external_id="A-1")
    assert (sock.title, sock.price, sock.currency, sock.availability) == (
        "Zoë's wool socks",
        Decimal("14.00"),
        "GBP",
        "in_stock",
    )


def test_bad_rows_are_reported_with_row_numbers_and_good_rows_import(import_catalog):
    business = BusinessFactory()
    text = (
        "# Required | id,# Required | title,# Required | 9.99 USD\n"
        "id,title,price\n"
        "OK-1,Good one,10.00 USD\n"
        ",No id,5.00 USD\n"
        "OK-2,,5.00 USD\n"
        "OK-3,Bad price,ten dollars\n"
        "OK-1,Duplicate,11.00 USD\n"
        "OK-4,Also good,\n"
    )
    imp = import_catalog(business, text)
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 2, 4)
    assert imp.error_report == [
        {"row": 4, "column": "id", "reason": "missing id"},
        {"row": 5, "column": "title", "reason": "missing title"},
        {"row": 6, "column": "price", "reason": "not a price: 'ten dollars'"},
        {"row": 7, "column": "id", "reason": "duplicate id 'OK-1' (first on row 3)"},
    ]
    assert sorted(items(business)) == ["OK-1", "OK-4"]
    assert items(business)["OK-1"].title == "Good one"
    assert items(business)["OK-4"].price is None


def test_explicit_column_mapping(import_catalog):
    business = BusinessFactory()
    text = "Artikelnummer,Bezeichnung,Preis,Marke\nX1,Wanderstock,29.95 EUR,Leki\n"
    imp = import_catalog(
        business,
        text,
        mapping={"Artikelnummer": "external_id", "Bezeichnung": "title", "Preis": "price", "Marke": "brand"},
    )
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    item = Item.objects.get(business=business, external_id="X1")
    assert (item.title, item.price, item.brand, item.attributes) == (
        "Wanderstock",
        Decimal("29.95"),
        "Leki",
        {},
    )


def test_csv_without_id_or_title_column_is_rejected_as_a_whole(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, "name_of_thing,cost\nA,1\n")
    assert imp.state == "failed"
    assert imp.error_message == (
        "no column for an id and a title was found (columns: name_of_thing, cost); "
        "give a column mapping or use Meta/Google/Shopify column names"
    )
    assert Item.objects.filter(business=business).count() == 0


SHOPIFY_LEGACY = (
    "Handle,Title,Body (HTML),Vendor,Type,Tags,Published,Option1 Name,Option1 Value,Option2 Name,Option2 Value,"
    "Variant SKU,Variant Inventory Tracker,Variant Inventory Qty,Variant Inventory Policy,Variant Price,"
    "Variant Compare At Price,Image Src,Status\n"
    'trail-tee,Trail tee,"<p>Merino <strong>blend</strong> tee.</p><script>x()</script>",Northwind,Shirts,"merino, hiking",'
    "true,Size,S,Color,Red,TT-S-R,shopify,3,deny,35.00,45.00,https://cdn.example/tee.jpg,active\n"
    "trail-tee,,,,,,,,M,,Red,TT-M-R,shopify,0,deny,35.00,45.00,https://cdn.example/tee-2.jpg,\n"
    "trail-tee,,,,,,,,L,,Blue,TT-L-B,shopify,0,continue,37.00,,,\n"
    "gift-card,Gift card,<p>Any amount</p>,Northwind,Gift,,true,Title,Default Title,,,GC-1,,,deny,25.00,,,active\n"
    "old-cap,Old cap,Retired,Northwind,Hats,,false,Title,Default Title,,,OC-1,shopify,5,deny,10.00,,,archived\n"
)


def test_shopify_legacy_export_groups_variants_by_handle(import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, SHOPIFY_LEGACY, filename="products_export_1.csv")
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 3, 0)
    tee = Item.objects.get(business=business, external_id="trail-tee")
    assert tee.title == "Trail tee"
    assert tee.description == "Merino blend tee."
    assert (tee.brand, tee.category, tee.item_group_id) == ("Northwind", "Shirts", "trail-tee")
    # The cheapest variant is on sale: 35.00 instead of 45.00.
    assert (tee.price, tee.sale_price, tee.currency) == (Decimal("45.00"), Decimal("35.00"), "")
    assert tee.availability == "in_stock"
    assert tee.image_url == "https://cdn.example/tee.jpg"
    assert tee.attributes == {
        "size": "S, M, L",
        "color": "Red, Blue",
        "tags": "merino, hiking",
        "additional_image_links": "https://cdn.example/tee-2.jpg",
    }
    assert tee.variants == [
        {
            "sku": "TT-S-R",
            "options": {"Size": "S", "Color": "Red"},
            "price": "35.00",
            "compare_at_price": "45.00",
            "available": True,
            "inventory_quantity": 3,
        },
        {
            "sku": "TT-M-R",
            "options": {"Size": "M", "Color": "Red"},
            "price": "35.00",
            "compare_at_price": "45.00",
            "available": False,
            "inventory_quantity": 0,
        },
        {
            "sku": "TT-L-B",
            "options": {"Size": "L", "Color": "Blue"},
            "price": "37.00",
            "compare_at_price": None,
            "available": True,
            "inventory_quantity": 0,
        },
    ]
    gift = Item.objects.get(business=business, external_id="gift-card")
    assert (gift.price, gift.variants, gift.availability) == (Decimal("25.00"), [], "in_stock")
    assert Item.objects.get(business=business, external_id="old-cap").availability == "discontinued"


def test_shopify_2024_headers(import_catalog):
    business = BusinessFactory()
    text = (
        "Title,URL handle,Description,Vendor,Product category,Type,Tags,Published on online store,Status,SKU,"
        "Barcode,Option1 name,Option1 value,Price,Compare-at price,Inventory tracker,Inventory quantity,"
        "Continue selling when out of stock,Product image URL\n"
        "Camp mug,camp-mug,<p>Enamel &amp; steel</p>,Tinware,Kitchen,Mugs,,TRUE,Active,CM-1,123,Color,White,"
        "14.00,,shopify,0,DENY,https://cdn.example/mug.jpg\n"
        ",camp-mug,,,,,,,,CM-2,124,,Black,14.00,,shopify,0,DENY,\n"
    )
    imp = import_catalog(business, text)
    assert (imp.state, imp.created_count) == ("succeeded", 1)
    mug = Item.objects.get(business=business, external_id="camp-mug")
    assert (mug.title, mug.description, mug.category) == ("Camp mug", "Enamel & steel", "Mugs")
    assert mug.availability == "out_of_stock"
    assert [v["sku"] for v in mug.variants] == ["CM-1", "CM-2"]
    assert [v["options"] for v in mug.variants] == [{"Color": "White"}, {"Color": "Black"}]
    assert mug.attributes == {"color": "White, Black"}


def test_excel_unicode_text_export_utf16_tabs(import_catalog):
    business = BusinessFactory()
    text = "id\ttitle\tprice\r\nU1\tÅngström lamp\t19,90 SEK\r\n"
    imp = import_catalog(business, text.encode("utf-16"), filename="export.txt")
    assert (imp.state, imp.format, imp.created_count) == ("succeeded", "tsv", 1)
    lamp = Item.objects.get(business=business, external_id="U1")
    assert (lamp.title, lamp.price, lamp.currency) == ("Ångström lamp", Decimal("19.90"), "SEK")
