"""Catalog links: only http(s) links (and paths on this server) are stored and rendered (docs/security.md,
"Catalog content and links"). A row with a hostile link still imports, without the link, and the import's
report says so."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.template import Context, Template
from django.test import Client
from django.urls import reverse

from businesses.models import Business
from catalogs.links import http_link
from catalogs.models import Item
from catalogs.services.items import LINK_DROPPED
from tests.factories import BusinessFactory, MembershipFactory

pytestmark = pytest.mark.django_db

HOSTILE = [
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(document.domain)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "\x01javascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
    "//evil.example/p",  # protocol-relative: another host, dropped (docs/security.md)
    "/\\evil.example/p",  # a browser reads "/\" as "//"
    "https:evil.example",
    "https://",
    "ftp://files.example/p",
    "file:///etc/passwd",
    "product-page.html",
]
KEPT = [
    ("https://shop.example/p/1", "https://shop.example/p/1"),
    ("HTTP://Shop.Example/p/1", "HTTP://Shop.Example/p/1"),
    ("  https://shop.example/p/2  ", "https://shop.example/p/2"),
    ("/static/demo/tent.svg", "/static/demo/tent.svg"),
    ("", ""),
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_a_link_that_is_not_http_is_dropped(raw: str) -> None:
    assert http_link(raw) is None


@pytest.mark.parametrize(("raw", "kept"), KEPT)
def test_http_links_and_paths_on_this_server_are_kept(raw: str, kept: str) -> None:
    assert http_link(raw) == kept


def _csv(rows: list[tuple[str, str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "title", "price", "link", "image_link"])
    for external_id, link, image in rows:
        writer.writerow([external_id, f"Item {external_id}", "10 EUR", link, image])
    return out.getvalue()


def _links(business: Business) -> dict[str, tuple[str, str]]:
    return {
        external_id: (url, image_url)
        for external_id, url, image_url in Item.objects.filter(business=business).values_list(
            "external_id", "url", "image_url"
        )
    }


def test_csv_rows_with_hostile_links_import_without_them(import_catalog: Callable[..., Any]) -> None:
    shop = BusinessFactory()
    rows = [(f"BAD-{n}", raw, raw) for n, raw in enumerate(HOSTILE)]
    rows.append(("GOOD", "https://shop.example/p/good", "/static/demo/tent.svg"))
    imp = import_catalog(shop, _csv(rows))
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", len(HOSTILE) + 1, 0)
    links = _links(shop)
    assert links.pop("GOOD") == ("https://shop.example/p/good", "/static/demo/tent.svg")
    assert links == {f"BAD-{n}": ("", "") for n in range(len(HOSTILE))}
    # One report line per dropped link, naming the row (the header is row 1) and the field, not the link.
    assert imp.error_report == [
        {"row": n + 2, "column": column, "reason": LINK_DROPPED}
        for n in range(len(HOSTILE))
        for column in ("url", "image_url")
    ]


def test_json_feed_and_shopify_variant_images_are_checked_too(import_catalog: Callable[..., Any]) -> None:
    shop = BusinessFactory()
    feed = [
        {"id": "J-1", "title": "Lamp", "price": "5 EUR", "link": "JaVaScRiPt:alert(1)", "image_link": "x"},
        {"id": "J-2", "title": "Mat", "price": "5 EUR", "link": "https://shop.example/mat"},
    ]
    imp = import_catalog(shop, json.dumps(feed), filename="feed.json")
    assert (imp.created_count, imp.failed_count) == (2, 0)
    assert _links(shop) == {"J-1": ("", ""), "J-2": ("https://shop.example/mat", "")}

    shopify = (
        "Handle,Title,Variant SKU,Variant Price,Image Src,Variant Image,Option1 Name,Option1 Value\n"
        "boot,Trail boot,BOOT-41,99.00,https://cdn.example/boot.jpg,javascript:alert(1),Size,41\n"
        "boot,,BOOT-42,99.00,,https://cdn.example/boot-42.jpg,,42\n"
    )
    other = BusinessFactory()
    imp = import_catalog(other, shopify, filename="products_export.csv")
    assert (imp.created_count, imp.failed_count) == (1, 0)
    item = Item.objects.get(business=other)
    assert item.image_url == "https://cdn.example/boot.jpg"
    assert [variant.get("image_url") for variant in item.variants] == [
        None,
        "https://cdn.example/boot-42.jpg",
    ]
    assert imp.error_report == [{"row": 2, "column": "variant_image_url", "reason": LINK_DROPPED}]


@pytest.mark.parametrize("field", ["url", "image_url"])
@pytest.mark.parametrize("raw", ["javascript:alert(1)", "JaVaScRiPt:x", "//evil.example", "data:text/html,x"])
def test_the_database_refuses_a_link_that_skipped_the_importer(field: str, raw: str) -> None:
    # The COPY upsert skips URLField validation; the CHECK constraint holds whatever writes the row.
    shop = BusinessFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Item.objects.create(business=shop, external_id="X", title="X", **{field: raw})
    assert not Item.objects.filter(business=shop).exists()


def test_templates_render_only_http_links() -> None:
    template = Template("{% load catalog_links %}[{{ link|http_link }}]")
    for raw in HOSTILE:
        assert template.render(Context({"link": raw})) == "[]"
    assert template.render(Context({"link": "https://shop.example/a?b=1&c=2"})) == (
        "[https://shop.example/a?b=1&amp;c=2]"
    )


def test_pages_never_render_a_javascript_link(client: Client, import_catalog: Callable[..., Any]) -> None:
    membership = MembershipFactory()
    shop = membership.business
    Business.objects.filter(pk=shop.pk).update(demo_page_enabled=True)
    import_catalog(
        shop, _csv([("EVIL", "javascript:alert(document.domain)", "JaVaScRiPt:alert(1)"), ("OK", "", "")])
    )
    demo = client.get(f"/demo/{shop.slug}/").content.decode()
    assert "Item EVIL" in demo
    assert "script:" not in demo.lower()
    client.force_login(membership.user)
    item = Item.objects.get(business=shop, external_id="EVIL")
    page = client.get(reverse("dashboard:catalog_item", kwargs={"slug": shop.slug, "item_id": item.pk}))
    assert page.status_code == 200
    assert "script:" not in page.content.decode().lower()


def test_widget_cards_take_links_only_through_safe_url() -> None:
    # The widget's product cards take their href and src only from safeUrl; run it in node on hostile input.
    from messaging.widget_views import WIDGET_PATH

    source = WIDGET_PATH.read_text()
    assert "const href = safeUrl(c.url || c.link, BASE);" in source
    assert "const img = safeUrl(c.image_url || c.image, BASE);" in source
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    start = source.index("const safeUrl = ")
    function = source[start : source.index("\n  };\n", start) + 5]
    hostile = [raw for raw in HOSTILE if not raw.startswith(("//", "/\\", "product-page", "https:"))]
    script = (
        f"{function}\nconsole.log(JSON.stringify({json.dumps(hostile)}.map((raw) => safeUrl(raw, BASE))));"
    )
    out = subprocess.run(
        [node, "-e", "const BASE = 'https://agent.example';\n" + script],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(out.stdout) == [None] * len(hostile)
