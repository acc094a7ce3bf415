"""The widget links a URL in a reply only to the shop's own origins (its page, this server, its catalog's and
configured sites); any other URL, such as a phishing link planted in a feed's description, shows as text."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from messaging.widget_views import WIDGET_PATH


def _run_links(cards: list[str], config_origins: list[str], urls: list[str]) -> list[str | None]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = WIDGET_PATH.read_text()
    start = source.index("const safeUrl = ")
    safe_url = source[start : source.index("\n  };\n", start) + 5]
    start = source.index("  const linkOrigins = ")
    links = source[start : source.index("\n  };\n", source.index("const link = ", start)) + 5]
    script = f"""
const location = {{ origin: "https://shop.example" }};
const BASE = "https://agent.example";
const document = {{ createTextNode: (text) => ({{ text }}) }};
const h = (tag, cls, text) => ({{ tag, text }});
{safe_url}
{links}
{json.dumps(cards)}.forEach(trustOriginOf);
{json.dumps(config_origins)}.forEach(trustOriginOf);
console.log(JSON.stringify({json.dumps(urls)}.map((u) => link(u, u).href || null)));
"""
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def test_a_reply_links_only_to_the_shops_own_origins() -> None:
    linked = _run_links(
        cards=["https://catalog.example/p/tent-2p", "javascript:alert(1)"],
        config_origins=["https://www.shop-two.example"],
        urls=[
            "https://shop.example/returns",  # the page the widget is on
            "https://agent.example/demo/x/",  # this server
            "https://catalog.example/p/stove",  # a catalog link's origin
            "https://www.shop-two.example/faq",  # a site the business configured
            "https://phish.example/login",  # planted in a description
            "https://catalog.example.phish.example/p",  # look-alike host
            "http://catalog.example/p/stove",  # another scheme is another origin
        ],
    )
    assert linked == [
        "https://shop.example/returns",
        "https://agent.example/demo/x/",
        "https://catalog.example/p/stove",
        "https://www.shop-two.example/faq",
        None,
        None,
        None,
    ]


@pytest.mark.django_db
def test_the_widget_config_names_the_business_sites_and_no_other_business(client: object) -> None:
    from tests.factories import BusinessFactory

    shop = BusinessFactory(allowed_origins=["https://shop.example", "https://*.shop.example"])
    BusinessFactory(allowed_origins=["https://other.example"])
    url = f"/api/widget/{shop.widget_key}/config"
    config = client.get(url, HTTP_ORIGIN="https://shop.example").json()  # type: ignore[attr-defined]
    assert config["link_origins"] == ["https://shop.example"]
    # A page elsewhere learns nothing of the business's sites.
    elsewhere = client.get(url, HTTP_ORIGIN="https://evil.example").json()  # type: ignore[attr-defined]
    assert elsewhere["link_origins"] == []
