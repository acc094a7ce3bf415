"""Feeds against a real HTTP server on loopback: conditional GET, full sync through the import pipeline, the
shrink hold, failures that change nothing, Shopify and WooCommerce store pages, the claim of due feeds, and
tenant isolation of the runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from businesses.models import Business
from businesses.services import api_key_issue
from catalogs.models import FeedSource, Import, Item
from catalogs.services.feeds import (
    FeedRun,
    feed_create,
    feed_import_confirm,
    feed_import_discard,
    feed_sync,
    feeds_claim_due,
)
from catalogs.services.imports import import_run, import_start
from tests.factories import BusinessFactory
from tests.fixtures.feeds import FeedServer

pytestmark = pytest.mark.django_db

HEADER = "id,title,price,availability,link\n"


def csv_feed(ids: list[str] | range, *, price: str = "10.00 EUR") -> str:
    return HEADER + "".join(f"SKU-{n},Item {n},{price},in stock,https://shop.example/p/{n}\n" for n in ids)


@pytest.fixture(autouse=True)
def _private_allowed(fetch_rule: Callable[..., None], catalog_media: Path) -> None:
    # The feed server is on loopback: allowed here; the tests of the rule switch it on themselves.
    fetch_rule(allow_private=True)


def make_feed(business: Business, url: str, *, kind: str = "feed", threshold: int = 30) -> FeedSource:
    return feed_create(
        business=business, url=url, kind=kind, interval_minutes=60, shrink_threshold_percent=threshold
    )


def sync(feed: FeedSource) -> tuple[FeedRun, Import | None]:
    """One run of the feed, and the import it started run to its end (what the ingest worker does)."""
    run = feed_sync(feed_id=feed.pk, enqueue=False)
    assert run is not None
    imp = import_run(import_id=run.import_id) if run.import_id else None
    return run, imp


def active_ids(business: Business) -> list[str]:
    return sorted(
        Item.objects.filter(business=business, is_active=True).values_list("external_id", flat=True)
    )


def test_a_feed_is_imported_in_full_sync_marked_with_its_feed(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(5)), etag='"v1"')
    feed = make_feed(business, feed_server.url("/feed.csv"))

    run, imp = sync(feed)

    assert run.outcome == "imported" and imp is not None
    assert (imp.state, imp.mode, imp.feed_id, imp.created_count) == ("succeeded", "full", feed.pk, 5)
    assert (imp.source_url, imp.source_etag, imp.original_filename) == (feed.url, '"v1"', "feed.csv")
    assert active_ids(business) == [f"SKU-{n}" for n in range(5)]
    feed.refresh_from_db()
    assert (feed.last_outcome, feed.last_error, feed.running_since) == ("imported", "", None)
    assert feed.last_run_at is not None


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_an_unchanged_feed_answers_304_and_imports_nothing(feed_server: FeedServer, validator: str) -> None:
    business = BusinessFactory()
    value = '"abc"' if validator == "etag" else "Tue, 03 Mar 2026 10:00:00 GMT"
    feed_server.serve("/feed.csv", csv_feed(range(3)), **{validator: value})
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)

    run, imp = sync(feed)

    assert (run.outcome, imp) == ("not_modified", None)
    header = "If-None-Match" if validator == "etag" else "If-Modified-Since"
    assert feed_server.requests[-1].headers[header] == value
    assert Import.objects.filter(feed=feed).count() == 1
    feed.refresh_from_db()
    assert feed.last_outcome == "not_modified"


def test_the_same_bytes_without_validators_are_unchanged(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)

    run, _ = sync(feed)

    assert run.outcome == "unchanged"
    assert Import.objects.filter(feed=feed).count() == 1


def test_a_changed_feed_retires_what_it_no_longer_lists(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(10)), etag='"v1"')
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)
    feed_server.serve("/feed.csv", csv_feed(range(1, 11)), etag='"v2"')  # one gone (10%), one new

    run, imp = sync(feed)

    assert run.outcome == "imported" and imp is not None
    assert (imp.state, imp.created_count, imp.retired_count) == ("succeeded", 1, 1)
    assert active_ids(business) == sorted(f"SKU-{n}" for n in range(1, 11))


def test_a_shrinking_feed_is_held_until_the_owner_confirms(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(10)), etag='"v1"')
    feed = make_feed(business, feed_server.url("/feed.csv"), threshold=30)
    sync(feed)
    feed_server.serve("/feed.csv", csv_feed(range(3)), etag='"v2"')  # would retire 7 of 10

    run, held = sync(feed)

    assert run.outcome == "imported" and held is not None
    assert held.state == "held"
    assert held.error_message == (
        "held: this file would retire 7 of the 10 active items (70%), more than the limit of 30% (and create "
        "0, update 0); nothing was changed. Confirm it to apply it, or discard it."
    )
    assert (held.retired_count, held.created_count, held.unchanged_count) == (0, 0, 0)
    assert len(active_ids(business)) == 10  # nothing applied
    # The held content is the baseline: the next run asks with its ETag and gets a 304, not a second hold.
    assert sync(feed)[0].outcome == "not_modified"

    assert feed_import_confirm(business=business, import_id=held.pk)
    applied = import_run(import_id=held.pk)
    assert applied is not None
    assert (applied.state, applied.retired_count, applied.retire_limit_percent) == ("succeeded", 7, None)
    assert active_ids(business) == ["SKU-0", "SKU-1", "SKU-2"]
    assert not feed_import_confirm(business=business, import_id=held.pk)  # once


def test_a_discarded_run_changes_nothing_and_is_not_held_again(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(10)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)
    feed_server.serve("/feed.csv", csv_feed(range(2)))  # no validators: the body's hash decides
    _, held = sync(feed)
    assert held is not None and held.state == "held"

    assert feed_import_discard(business=business, import_id=held.pk)
    held.refresh_from_db()
    assert held.state == "discarded" and held.error_message.endswith("Discarded by the owner.")
    assert len(active_ids(business)) == 10
    assert sync(feed)[0].outcome == "unchanged"
    assert not feed_import_confirm(business=business, import_id=held.pk)


def test_newer_content_supersedes_a_held_run(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(10)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)
    feed_server.serve("/feed.csv", csv_feed(range(2)))
    _, held = sync(feed)
    feed_server.serve("/feed.csv", csv_feed(range(9)))  # the shop fixed its export

    _, fixed = sync(feed)

    assert held is not None and fixed is not None
    held.refresh_from_db()
    assert (held.state, fixed.state, fixed.retired_count) == ("discarded", "succeeded", 1)
    assert held.error_message.endswith(f"Superseded by a newer fetch (import {fixed.pk}).")


def test_a_fetch_failure_is_reported_on_the_feed_and_in_the_history(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)), etag='"v1"')
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)
    del feed_server.routes["/feed.csv"]

    run, _ = sync(feed)

    url = feed_server.url("/feed.csv")
    assert run.outcome == "failed"
    failed = Import.objects.get(pk=run.import_id)
    assert (failed.state, failed.feed_id, failed.business_id) == ("failed", feed.pk, business.pk)
    assert failed.error_message == f"{url} answered HTTP 404; the catalog was not changed"
    feed.refresh_from_db()
    assert (feed.last_outcome, feed.last_error) == ("failed", failed.error_message)
    assert len(active_ids(business)) == 3


def test_a_file_rejected_half_way_changes_nothing(feed_server: FeedServer, settings: Any) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(10)), etag='"v1"')
    feed = make_feed(business, feed_server.url("/feed.csv"))
    sync(feed)
    settings.CATALOG_IMPORT_BATCH_SIZE = 2  # batches are written before the bad line is reached
    settings.CATALOG_MAX_FIELD_BYTES = 1024
    broken = csv_feed(range(10), price="12.00 EUR") + f"SKU-99,{'x' * 2000},1.00 EUR,in stock,\n"
    feed_server.serve("/feed.csv", broken, etag='"v2"')

    run, imp = sync(feed)

    assert run.outcome == "imported" and imp is not None
    assert (imp.state, imp.error_message) == (
        "failed",
        "row 12: the file is not valid CSV (field larger than field limit (1024))",
    )
    prices = set(Item.objects.filter(business=business).values_list("price", flat=True))
    assert [str(p) for p in prices] == ["10.00"]  # not one row of the rejected file was kept
    # A failed import is no baseline: the next run fetches the content again.
    feed_server.serve("/feed.csv", csv_feed(range(10), price="12.00 EUR"), etag='"v2"')
    run, imp = sync(feed)
    assert imp is not None and (imp.state, imp.updated_count) == ("succeeded", 10)


def test_a_feed_that_serves_a_text_page_is_refused(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed", "Service temporarily unavailable.\n", content_type="text/plain")
    feed = make_feed(business, feed_server.url("/feed"))

    _, imp = sync(feed)

    assert imp is not None and imp.state == "failed"
    assert imp.error_message == "a feed must serve products (CSV, TSV, XML or JSON), not text"
    assert not business.documents.exists()


def test_feeds_obey_the_fetch_rule(feed_server: FeedServer, fetch_rule: Callable[..., None]) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    fetch_rule(allow_private=False)

    run, _ = sync(feed)

    assert run.outcome == "failed" and "non-public address: refused" in run.error
    assert feed_server.requests == []
    assert Item.objects.filter(business=business).count() == 0


def shopify_product(n: int, variants: int = 1) -> dict[str, Any]:
    return {
        "id": 1000 + n,
        "title": f"Tee {n}",
        "handle": f"tee-{n}",
        "body_html": "<p>Soft <b>cotton</b> tee.</p>",
        "vendor": "Acme",
        "product_type": "Shirts",
        "tags": ["summer", "cotton"],
        "options": [{"name": "Size", "position": 1}, {"name": "Color", "position": 2}],
        "images": [{"id": 1, "src": f"https://cdn.shopify.example/tee-{n}.jpg", "variant_ids": []}],
        "variants": [
            {
                "id": 50_000 + n * 10 + v,
                "title": f"{'SML'[v]} / Red",
                "option1": "SML"[v],
                "option2": "Red",
                "option3": None,
                "sku": f"TEE-{n}-{'SML'[v]}" if v else "",
                "price": "19.99",
                "compare_at_price": "24.99" if v == 1 else None,
                "available": v != 2,
                "featured_image": None,
            }
            for v in range(variants)
        ],
    }


def test_a_shopify_store_is_read_page_by_page(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    first = {"products": [shopify_product(0, variants=3)] + [shopify_product(n) for n in range(1, 250)]}
    feed_server.pages("/products.json", [json.dumps(first), json.dumps({"products": [shopify_product(250)]})])
    feed = make_feed(business, feed_server.url("/"), kind="shopify")
    assert feed.url == feed_server.url("/products.json")

    _, imp = sync(feed)

    assert imp is not None and (imp.state, imp.failed_count) == ("succeeded", 0), imp.error_message
    assert imp.created_count == 253  # 251 products, one of them with 3 variants
    queries = [r.path for r in feed_server.requests]
    assert queries == ["/products.json?limit=250&page=1", "/products.json?limit=250&page=2"]
    items = {i.external_id: i for i in Item.objects.filter(business=business, item_group_id="tee-0")}
    assert sorted(items) == ["TEE-0-L", "TEE-0-M", "shopify-50000"]
    small, medium, large = items["shopify-50000"], items["TEE-0-M"], items["TEE-0-L"]
    assert (small.title, str(small.price), small.sale_price, small.availability) == (
        "Tee 0 (S / Red)",
        "19.99",
        None,
        "in_stock",
    )
    assert (str(medium.price), str(medium.sale_price)) == ("24.99", "19.99")
    assert large.availability == "out_of_stock"
    assert medium.url == feed_server.url("/products/tee-0?variant=50001")
    assert medium.image_url == "https://cdn.shopify.example/tee-0.jpg"
    assert (medium.description, medium.brand, medium.category, medium.currency) == (
        "Soft cotton tee.",
        "Acme",
        "Shirts",
        "",
    )
    assert medium.attributes == {"size": "M", "color": "Red", "tags": "summer, cotton"}


def woo_product(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": 700 + n,
        "name": f"Mug {n}",
        "parent": 0,
        "sku": f"MUG-{n}",
        "permalink": f"https://woo.example/product/mug-{n}/",
        "short_description": "<p>Stoneware mug.</p>",
        "on_sale": False,
        "prices": {
            "price": "1250",
            "regular_price": "1250",
            "sale_price": "1250",
            "currency_code": "EUR",
            "currency_minor_unit": 2,
        },
        "images": [{"id": 1, "src": f"https://woo.example/mug-{n}.jpg"}],
        "categories": [{"id": 3, "name": "Kitchen"}],
        "attributes": [{"id": 1, "name": "Colour", "terms": [{"name": "Blue"}, {"name": "White"}]}],
        "is_in_stock": True,
        "is_on_backorder": False,
        **extra,
    }


def test_a_woocommerce_store_is_read_page_by_page(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    first = [woo_product(n) for n in range(100)]
    second = [
        woo_product(
            100,
            on_sale=True,
            prices={
                "price": "900",
                "regular_price": "1250",
                "sale_price": "900",
                "currency_code": "EUR",
                "currency_minor_unit": 2,
            },
        ),
        woo_product(
            101,
            sku="",
            is_in_stock=False,
            prices={
                "price": "1500",
                "regular_price": "1500",
                "currency_code": "JPY",
                "currency_minor_unit": 0,
            },
        ),
        woo_product(102, is_in_stock=False, is_on_backorder=True),
    ]
    path = "/shop/wp-json/wc/store/v1/products"
    feed_server.pages(path, [json.dumps(first), json.dumps(second)], headers={"X-WP-TotalPages": "2"})
    feed = make_feed(business, feed_server.url("/shop"), kind="woocommerce")
    assert feed.url == feed_server.url(path)

    _, imp = sync(feed)

    assert imp is not None and (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 103, 0)
    assert [r.path for r in feed_server.requests] == [
        f"{path}?per_page=100&page=1",
        f"{path}?per_page=100&page=2",
    ]
    mug = Item.objects.get(business=business, external_id="MUG-0")
    assert (str(mug.price), mug.sale_price, mug.currency, mug.availability) == (
        "12.50",
        None,
        "EUR",
        "in_stock",
    )
    assert (mug.description, mug.category, mug.url) == (
        "Stoneware mug.",
        "Kitchen",
        "https://woo.example/product/mug-0/",
    )
    assert (mug.image_url, mug.attributes) == ("https://woo.example/mug-0.jpg", {"color": "Blue, White"})
    on_sale = Item.objects.get(business=business, external_id="MUG-100")
    assert (str(on_sale.price), str(on_sale.sale_price)) == ("12.50", "9.00")
    yen = Item.objects.get(business=business, external_id="woo-801")
    assert (str(yen.price), yen.currency, yen.availability) == ("1500.00", "JPY", "out_of_stock")
    assert Item.objects.get(business=business, external_id="MUG-102").availability == "backorder"


def test_a_store_with_more_pages_than_allowed_is_not_imported_in_part(
    feed_server: FeedServer, settings: Any
) -> None:
    business = BusinessFactory()
    settings.FEED_MAX_PAGES = 1
    feed_server.pages("/products.json", [json.dumps({"products": [shopify_product(n) for n in range(250)]})])
    feed = make_feed(business, feed_server.url("/products.json"), kind="shopify")

    run, _ = sync(feed)

    assert run.outcome == "failed"
    assert "more than 1 pages of products (FEED_MAX_PAGES): nothing imported" in run.error
    assert Item.objects.filter(business=business).count() == 0


def test_a_store_page_of_the_wrong_shape_is_refused(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.pages("/products.json", ['{"error": "Not Found"}'])
    feed = make_feed(business, feed_server.url("/products.json"), kind="shopify")

    run, _ = sync(feed)

    assert run.outcome == "failed"
    assert "is not a Shopify products.json page" in run.error


def test_due_feeds_are_claimed_once() -> None:
    business = BusinessFactory()
    now = timezone.now()
    due = make_feed(business, "https://a.example/feed.csv")
    later = make_feed(business, "https://b.example/feed.csv")
    paused = make_feed(business, "https://c.example/feed.csv")
    FeedSource.objects.filter(pk__in=[due.pk, paused.pk]).update(next_run_at=now - timedelta(minutes=1))
    FeedSource.objects.filter(pk=paused.pk).update(is_active=False)

    assert feeds_claim_due(now=now) == [due.pk]
    assert feeds_claim_due(now=now) == []
    due.refresh_from_db()
    assert due.next_run_at == now + timedelta(minutes=60)
    assert later.pk not in feeds_claim_due(now=now + timedelta(minutes=59))


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_claim_each_feed_once() -> None:
    business = BusinessFactory()
    now = timezone.now()
    feeds = [make_feed(business, f"https://shop.example/feed-{n}.csv") for n in range(20)]
    FeedSource.objects.filter(pk__in=[f.pk for f in feeds]).update(next_run_at=now - timedelta(minutes=1))
    start = threading.Barrier(2)
    claimed: list[list[int]] = []

    def beat() -> None:
        start.wait()
        try:
            claimed.append(feeds_claim_due(now=now))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed[0] + claimed[1]) == sorted(f.pk for f in feeds)


def test_a_run_in_progress_is_not_started_twice(feed_server: FeedServer, settings: Any) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    FeedSource.objects.filter(pk=feed.pk).update(running_since=timezone.now())

    assert feed_sync(feed_id=feed.pk) is None
    assert feed_server.requests == []
    # The worker that held it died: after the lease the run is taken over.
    stale = timezone.now() - timedelta(seconds=settings.FEED_RUN_LEASE_SECONDS + 1)
    FeedSource.objects.filter(pk=feed.pk).update(running_since=stale)
    assert sync(feed)[0].outcome == "imported"


def test_a_feed_whose_import_is_still_running_is_skipped(feed_server: FeedServer) -> None:
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)))
    feed = make_feed(business, feed_server.url("/feed.csv"))
    first = feed_sync(feed_id=feed.pk)
    assert first is not None and first.outcome == "imported"  # its import is queued, not run yet

    second = feed_sync(feed_id=feed.pk)

    assert second is not None and second.outcome == "busy"
    assert len(feed_server.requests) == 1


def test_runs_and_decisions_stay_within_their_business(feed_server: FeedServer) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    feed_server.serve("/a.csv", csv_feed(range(10)))
    feed_server.serve("/b.csv", csv_feed(range(100, 110)))
    feed_a = make_feed(shop_a, feed_server.url("/a.csv"))
    feed_b = make_feed(shop_b, feed_server.url("/b.csv"))
    sync(feed_a)
    sync(feed_b)
    feed_server.serve("/b.csv", csv_feed(range(100, 101)))
    _, held_b = sync(feed_b)
    assert held_b is not None and held_b.state == "held"

    # A's owner cannot decide on B's held run, whatever the id.
    assert not feed_import_confirm(business=shop_a, import_id=held_b.pk)
    assert not feed_import_discard(business=shop_a, import_id=held_b.pk)
    held_b.refresh_from_db()
    assert held_b.state == "held"
    assert active_ids(shop_a) == sorted(f"SKU-{n}" for n in range(10))
    assert len(active_ids(shop_b)) == 10
    assert set(Import.objects.filter(feed=feed_b).values_list("business_id", flat=True)) == {shop_b.pk}


def test_an_import_from_a_url_over_the_api(feed_server: FeedServer, client: Any) -> None:
    business = BusinessFactory()
    key = api_key_issue(business, name="ci").raw_key
    feed_server.serve("/exports/catalog.csv", csv_feed(range(4)), etag='"x"')

    response = client.post(
        "/api/v1/catalog/imports",
        {"url": feed_server.url("/exports/catalog.csv")},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert response.status_code == 202
    imp = Import.objects.get(pk=response.json()["id"])
    assert (imp.state, imp.original_filename, imp.source_url) == (
        "pending",
        "catalog.csv",
        feed_server.url("/exports/catalog.csv"),
    )
    assert feed_server.requests == []  # fetched by the worker, not in the request
    done = import_run(import_id=imp.pk)
    assert done is not None and (done.state, done.created_count, done.source_etag) == ("succeeded", 4, '"x"')
    assert len(active_ids(business)) == 4


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://shop.example/feed.csv", "only http and https URLs can be fetched"),
        ("http://127.0.0.1/feed.csv", "the host '127.0.0.1' resolves to 127.0.0.1, a private, loopback or"),
        ("http://169.254.169.254/latest/meta-data/", "resolves to 169.254.169.254"),
    ],
)
def test_a_url_the_rule_refuses_is_a_400_over_the_api(
    client: Any, fetch_rule: Callable[..., None], url: str, reason: str
) -> None:
    fetch_rule(allow_private=False)
    business = BusinessFactory()
    key = api_key_issue(business, name="ci").raw_key

    response = client.post("/api/v1/catalog/imports", {"url": url}, HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert Import.objects.count() == 0


def test_a_url_import_whose_fetch_fails_changes_nothing(feed_server: FeedServer, settings: Any) -> None:
    business = BusinessFactory()
    feed_server.serve("/big.csv", csv_feed(range(50)))
    imp = import_start(business=business, url=feed_server.url("/big.csv"), enqueue=False)
    settings.CATALOG_MAX_UPLOAD_BYTES = 100

    done = import_run(import_id=imp.pk)

    assert done is not None and done.state == "failed"
    assert done.error_message.endswith("over the limit of 100 bytes")
    assert not done.file and Item.objects.filter(business=business).count() == 0
