"""The widget's HTTP endpoints: the script, the public config and the demo storefront (no browser)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from messaging.widget_views import WIDGET_PATH
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db

CATALOG = (
    "id,title,description,availability,price,link,image_link,brand\n"
    "TENT-2P,Ridgeline 2-person tent,Freestanding tent.,in stock,249.00 EUR,"
    "https://shop.example/p/tent-2p,https://shop.example/img/tent-2p.jpg,Ridgeline\n"
    'EVIL-1,"&lt;script&gt;alert(1)&lt;/script&gt; Evil lamp",A lamp.,out of stock,19.90 EUR,'
    "https://shop.example/p/evil,https://shop.example/img/evil.jpg,Glow\n"
)


def test_widget_js_is_served_as_javascript_with_cache_headers(client: Client) -> None:
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in response
    assert response.content == WIDGET_PATH.read_bytes()


def test_widget_js_gzip_and_etag_revalidation(client: Client) -> None:
    response = client.get("/widget.js", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert response["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.content) == WIDGET_PATH.read_bytes()
    etag = response["ETag"]
    assert etag.endswith('-gz"')
    again = client.get("/widget.js", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    # The identity representation has its own tag: a gzip tag does not validate it.
    plain = client.get("/widget.js", HTTP_IF_NONE_MATCH=etag)
    assert plain.status_code == 200
    assert plain["ETag"] == etag.replace('-gz"', '"')


def test_widget_js_refuses_post(client: Client) -> None:
    assert client.post("/widget.js").status_code == 405


def test_widget_js_contains_no_html_sinks() -> None:
    # The widget renders untrusted text with DOM APIs only; a sink appearing here is a review stop.
    source = WIDGET_PATH.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, sink


def test_config_is_public_and_says_whether_the_origin_may_connect(client: Client) -> None:
    business = BusinessFactory(name="Trail & Co", allowed_origins=["https://shop.example"])
    response = client.get(f"/api/widget/{business.widget_key}/config", HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Cache-Control"] == "public, max-age=60"
    assert response["Vary"] == "Origin"
    body = response.json()
    assert body["origin_allowed"] is True
    assert set(body) == {"agent", "origin_allowed", "link_origins", "upload_max_bytes"}
    # The largest photo the upload takes (MESSAGE_MEDIA_MAX_BYTES): the widget checks a file before sending it.
    assert body["upload_max_bytes"] == 5 * 1024 * 1024
    assert body["agent"] == {
        "name": "Trail & Co assistant",
        "greeting": "Hi! How can I help you today?",
        "theme": {
            "color": "#2563eb",
            "position": "right",
            "title": "Trail & Co assistant",
            "avatar_url": "",
            "dark_mode": "auto",
        },
    }
    other = client.get(f"/api/widget/{business.widget_key}/config", HTTP_ORIGIN="https://evil.example")
    assert other.json()["origin_allowed"] is False
    # The allowlist itself is not disclosed.
    assert "shop.example" not in other.content.decode()


def test_config_carries_the_agent_settings_and_nothing_else(client: Client) -> None:
    from agents.services import agent_update

    business = BusinessFactory(allowed_origins=["https://shop.example"])
    agent_update(
        business,
        name="Ridge Guide",
        greeting="Welcome!",
        instructions="Never reveal the margin: 40%.",
        theme_color="#0a7d5a",
        theme_position="left",
        theme_title="Ask us",
        theme_avatar_url="https://shop.example/logo.png",
        theme_dark_mode="dark",
    )
    response = client.get(f"/api/widget/{business.widget_key}/config", HTTP_ORIGIN="https://shop.example")
    assert response.json()["link_origins"] == business.allowed_origins
    assert {k: v for k, v in response.json().items() if k != "link_origins"} == {
        "agent": {
            "name": "Ridge Guide",
            "greeting": "Welcome!",
            "theme": {
                "color": "#0a7d5a",
                "position": "left",
                "title": "Ask us",
                "avatar_url": "https://shop.example/logo.png",
                "dark_mode": "dark",
            },
        },
        "origin_allowed": True,
        "upload_max_bytes": 5 * 1024 * 1024,
    }
    assert "margin" not in response.content.decode()


def test_config_of_an_unknown_key_is_404(client: Client) -> None:
    response = client.get("/api/widget/pk_nope/config")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown widget key"}


def test_demo_page_lists_the_business_catalog_escaped_and_embeds_the_widget(
    client: Client, import_catalog: Callable[..., Any]
) -> None:
    shop = BusinessFactory(slug="trail-shop", allowed_origins=["http://testserver"], demo_page_enabled=True)
    other = BusinessFactory(slug="other-shop")
    import_catalog(shop, CATALOG)
    import_catalog(
        other,
        "id,title,description,availability,price,link,image_link\n"
        "SECRET-1,Other shop's kayak,x,in stock,10 EUR,https://o.example/k,https://o.example/k.jpg\n",
    )
    # The importer decodes entities: the stored title really contains a script tag.
    assert shop.items.get(external_id="EVIL-1").title == "<script>alert(1)</script> Evil lamp"
    response = client.get("/demo/trail-shop/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ridgeline 2-person tent" in html
    assert "249.00 EUR" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Evil lamp" in html
    assert "<script>alert(1)" not in html
    # Tenant isolation: another business's items never appear on this storefront.
    assert "kayak" not in html
    assert f'<script src="http://testserver/widget.js" data-agent="{shop.widget_key}" async></script>' in html
    assert "is not in" not in html  # the page's origin is allowed: no warning


def test_demo_page_warns_when_its_origin_is_not_allowed(client: Client) -> None:
    BusinessFactory(slug="strict-shop", allowed_origins=["https://shop.example"], demo_page_enabled=True)
    html = client.get("/demo/strict-shop/").content.decode()
    assert "This page's origin (http://testserver) is not in" in html


def test_demo_page_of_an_unknown_business_is_404(client: Client) -> None:
    assert client.get("/demo/no-such-shop/").status_code == 404
