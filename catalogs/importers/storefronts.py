"""Store APIs as feeds: one page of a Shopify store's ``products.json`` or of a WooCommerce Store API
(``/wp-json/wc/store/v1/products``) -> flat product records, one per item, keyed like a Meta feed's columns.

A feed's run writes the records as JSON Lines and imports that file through the ordinary pipeline
(``jsonfeed.jsonl_results``: the aliases of ``base.COLUMN_ALIASES``, validation, the error report), so a store
is read exactly like an uploaded feed. A page that is not the API's shape raises ``FileRejected``.

- Shopify: every variant is an item with its own id (its SKU, else ``shopify-<variant id>``), price, sale
  price (``compare_at_price`` above the price makes the price a sale price), availability and image; the
  product's handle groups them (``item_group_id``). Shopify's storefront JSON carries no currency.
- WooCommerce: every product is an item (the Store API's product list gives a variable product's price range,
  not each variation's price or SKU); its attribute terms become attributes (``size: S, M, L``). Prices are
  integers in minor units, scaled by ``currency_minor_unit``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from catalogs.importers.base import COLUMN_ALIASES, FileRejected, column_key

Record = dict[str, str]
# Option and attribute names that would be read as a canonical column (an option called "Type" or "Title")
# are kept as attributes under "option_<name>" instead.
_CANONICAL_KEYS = frozenset(alias for aliases in COLUMN_ALIASES.values() for alias in aliases)
_MAX_DECIMALS = 6


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value) if isinstance(value, int | float) else ""


def _attribute_key(name: str) -> str:
    key = column_key(name)
    return f"option_{key}" if key in _CANONICAL_KEYS or not key else key


def _first_src(images: Any) -> str:
    if isinstance(images, list):
        for image in images:
            if isinstance(image, dict) and _text(image.get("src")):
                return _text(image.get("src"))
    return ""


def shopify_records(page: Any, *, store_url: str) -> list[Record]:
    """The items of one ``products.json`` page (``{"products": [...]}``); links point into ``store_url``."""
    products = page.get("products") if isinstance(page, dict) else None
    if not isinstance(products, list):
        raise FileRejected('not a Shopify products.json page (expected {"products": [...]})')
    records: list[Record] = []
    for product in products:
        if not isinstance(product, dict):
            records.append({})  # a row error in the import's report ("missing id")
            continue
        records.extend(_shopify_variants(product, store_url.rstrip("/")))
    return records


def _shopify_variants(product: dict[str, Any], store_url: str) -> list[Record]:
    handle = _text(product.get("handle")) or _text(product.get("id"))
    options = [
        _text(option.get("name")) if isinstance(option, dict) else _text(option)
        for option in product.get("options") or []
    ]
    tags = product.get("tags")
    shared: Record = {
        "item_group_id": handle,
        "description": _text(product.get("body_html")),
        "brand": _text(product.get("vendor")),
        "product_type": _text(product.get("product_type")),
        "tags": ", ".join(_text(t) for t in tags) if isinstance(tags, list) else _text(tags),
    }
    images = product.get("images")
    variants = [v for v in product.get("variants") or [] if isinstance(v, dict)] or [{}]
    records = []
    for variant in variants:
        variant_id = _text(variant.get("id"))
        record = dict(shared)
        record["id"] = _text(variant.get("sku")) or (f"shopify-{variant_id}" if variant_id else "")
        title = _text(product.get("title"))
        variant_title = _text(variant.get("title"))
        record["title"] = (
            f"{title} ({variant_title})" if variant_title and variant_title != "Default Title" else title
        )
        price, compare_at = _text(variant.get("price")), _text(variant.get("compare_at_price"))
        if compare_at and _decimal(compare_at) > _decimal(price):
            record["price"], record["sale_price"] = compare_at, price
        else:
            record["price"] = price
        available = variant.get("available", True)
        record["availability"] = "in stock" if available is not False else "out of stock"
        if handle:
            record["link"] = f"{store_url}/products/{handle}" + (
                f"?variant={variant_id}" if variant_id else ""
            )
        featured = variant.get("featured_image")
        record["image_link"] = (
            _text(featured.get("src")) if isinstance(featured, dict) else ""
        ) or _first_src(images)
        for position, name in enumerate(options[:3], start=1):
            value = _text(variant.get(f"option{position}"))
            if name and value and value != "Default Title":
                record[_attribute_key(name)] = value
        records.append(record)
    return records


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)


def woocommerce_records(page: Any) -> list[Record]:
    """The items of one Store API products page (a JSON array of products)."""
    if not isinstance(page, list):
        raise FileRejected("not a WooCommerce Store API products page (expected a JSON array)")
    return [_woocommerce_product(product) if isinstance(product, dict) else {} for product in page]


def _minor_units(value: Any, minor_unit: int) -> str:
    """``"1999"`` with 2 -> ``"19.99"``; "" stays "" (no price); anything else is left for the row's
    validation to report."""
    text = _text(value)
    if not text.lstrip("-").isdigit():
        return text
    return str(Decimal(int(text)).scaleb(-minor_unit))


def _woocommerce_product(product: dict[str, Any]) -> Record:
    raw_prices = product.get("prices")
    prices: dict[str, Any] = raw_prices if isinstance(raw_prices, dict) else {}
    minor = prices.get("currency_minor_unit", 2)
    minor_unit = minor if isinstance(minor, int) and 0 <= minor <= _MAX_DECIMALS else 2
    currency = _text(prices.get("currency_code"))[:3]
    regular = _minor_units(prices.get("regular_price") or prices.get("price"), minor_unit)
    sale = _minor_units(prices.get("sale_price"), minor_unit)
    record: Record = {
        "id": _text(product.get("sku")) or (f"woo-{_text(product.get('id'))}" if product.get("id") else ""),
        "title": _text(product.get("name")),
        "description": _text(product.get("short_description")) or _text(product.get("description")),
        "price": f"{regular} {currency}".strip() if regular else "",
        "link": _text(product.get("permalink")),
        "image_link": _first_src(product.get("images")),
        "item_group_id": _text(product.get("parent")) if product.get("parent") else "",
        "currency": currency,
    }
    if product.get("on_sale") and sale and sale != regular:
        record["sale_price"] = f"{sale} {currency}".strip()
    if product.get("is_in_stock") is False:
        record["availability"] = "backorder" if product.get("is_on_backorder") else "out of stock"
    else:
        record["availability"] = "in stock"
    for key, field in (("categories", "product_type"), ("brands", "brand")):
        names = [_text(c.get("name")) for c in product.get(key) or [] if isinstance(c, dict)]
        if names and names[0]:
            record[field] = names[0]
    for attribute in product.get("attributes") or []:
        if not isinstance(attribute, dict):
            continue
        terms = [_text(t.get("name")) for t in attribute.get("terms") or [] if isinstance(t, dict)]
        name = _text(attribute.get("name"))
        if name and any(terms):
            record[_attribute_key(name)] = ", ".join(t for t in terms if t)
    return record
