"""The admin's feed pages and its import from a URL: what an owner does, and the bad input that is refused
with a message (nothing created). Who may open which page is in test_permissions.py (every route, generated)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from catalogs.models import FeedSource, Import
from catalogs.services.feeds import feed_sync
from catalogs.services.imports import import_run
from tests.catalogs.test_feeds import csv_feed
from tests.dashboard.conftest import Tenant
from tests.fixtures.feeds import FeedServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(tenant_a: Tenant, catalog_media: Path) -> Client:
    client = Client()
    client.force_login(tenant_a.owner)
    return client


def feed_form(**overrides: str) -> dict[str, str]:
    return {
        "url": "https://shop.example/google.xml",
        "kind": "feed",
        "interval_minutes": "60",
        "shrink_threshold_percent": "30",
        **overrides,
    }


def test_an_owner_adds_a_feed_and_sees_it_listed(
    owner: Client, tenant_a: Tenant, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=True)  # localhost: the form resolves the host before it accepts the URL
    slug = tenant_a.business.slug
    response = owner.post(f"/app/{slug}/feeds/", feed_form(url="http://localhost:8321/", kind="shopify"))

    feed = FeedSource.objects.get(business=tenant_a.business, kind="shopify")
    assert response.status_code == 302 and response["Location"] == f"/app/{slug}/feeds/{feed.pk}/"
    assert (feed.url, feed.interval_minutes, feed.shrink_threshold_percent, feed.is_active) == (
        "http://localhost:8321/products.json",
        60,
        30,
        True,
    )
    page = owner.get(f"/app/{slug}/feeds/").content.decode()
    assert "http://localhost:8321/products.json" in page and "Shopify store (products.json)" in page
    assert f'href="/app/{slug}/feeds/"' in owner.get(f"/app/{slug}/").content.decode()  # the menu


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"url": "ftp://shop.example/feed.csv"}, "url", "only http and https URLs can be fetched"),
        ({"url": "https://no-such-host.invalid/feed.csv"}, "url", "does not resolve"),
        ({"url": "not a url at all"}, "url", "Enter a valid URL."),
        ({"url": "http://127.0.0.1:8000/feed.csv"}, "url", "non-public address: refused"),
        ({"url": "http://169.254.169.254/latest/"}, "url", "non-public address: refused"),
        ({"url": "https://shop.example/feed.csv"}, "url", "already has a feed with this URL"),
        ({"kind": "magento"}, "kind", "Select a valid choice."),
        ({"interval_minutes": "1"}, "interval_minutes", "Select a valid choice."),
        ({"interval_minutes": "soon"}, "interval_minutes", "Select a valid choice."),
        ({"shrink_threshold_percent": "0"}, "shrink_threshold_percent", "greater than or equal to 1"),
        ({"shrink_threshold_percent": "101"}, "shrink_threshold_percent", "less than or equal to 100"),
        ({"shrink_threshold_percent": ""}, "shrink_threshold_percent", "This field is required."),
    ],
)
def test_bad_input_in_the_feed_form_is_refused_with_a_message(
    owner: Client,
    tenant_a: Tenant,
    fetch_rule: Callable[..., None],
    overrides: dict[str, str],
    field: str,
    message: str,
) -> None:
    fetch_rule(allow_private=False)
    before = sorted(FeedSource.objects.values_list("pk", "url"))

    response = owner.post(f"/app/{tenant_a.business.slug}/feeds/", feed_form(**overrides))

    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field])
    assert sorted(FeedSource.objects.values_list("pk", "url")) == before


def test_an_owner_edits_runs_and_pauses_a_feed(owner: Client, tenant_a: Tenant) -> None:
    slug = tenant_a.business.slug
    feed = FeedSource.objects.get(pk=tenant_a.objects["feed"])
    url = f"/app/{slug}/feeds/{feed.pk}/"

    response = owner.post(url, {"interval_minutes": "1440", "shrink_threshold_percent": "10"})

    assert response.status_code == 302
    feed.refresh_from_db()
    assert (feed.interval_minutes, feed.shrink_threshold_percent, feed.is_active) == (1440, 10, False)
    assert owner.post(url, {"interval_minutes": "7", "shrink_threshold_percent": "10"}).status_code == 400
    feed.refresh_from_db()
    assert feed.interval_minutes == 1440

    before = timezone.now()
    assert owner.post(f"{url}run/").status_code == 302
    feed.refresh_from_db()
    assert feed.next_run_at >= before + timezone.timedelta(minutes=1440)
    assert owner.post(f"{url}delete/").status_code == 302
    assert not FeedSource.objects.filter(pk=feed.pk).exists()


def test_the_owner_confirms_or_discards_a_held_run_in_the_admin(
    owner: Client, tenant_a: Tenant, feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=True)
    business = tenant_a.business
    feed = FeedSource.objects.create(
        business=business, url=feed_server.url("/feed.csv"), next_run_at=timezone.now()
    )
    feed_server.serve("/feed.csv", csv_feed(range(10)))
    first = feed_sync(feed_id=feed.pk)
    assert first is not None and first.import_id is not None
    import_run(import_id=first.import_id)
    feed_server.serve("/feed.csv", csv_feed(range(1)))
    held = feed_sync(feed_id=feed.pk)
    assert held is not None and held.import_id is not None
    import_run(import_id=held.import_id)

    page = owner.get(f"/app/{business.slug}/feeds/").content.decode()
    assert "A run is waiting for your decision" in page and "would retire 9 of the 10 active items" in page
    detail = owner.get(f"/app/{business.slug}/catalog/imports/{held.import_id}/").content.decode()
    assert f"/feeds/imports/{held.import_id}/confirm/" in detail

    response = owner.post(f"/app/{business.slug}/feeds/imports/{held.import_id}/discard/")
    assert response.status_code == 302
    assert Import.objects.get(pk=held.import_id).state == "discarded"
    # Decided already: a second click changes nothing.
    owner.post(f"/app/{business.slug}/feeds/imports/{held.import_id}/confirm/")
    assert Import.objects.get(pk=held.import_id).state == "discarded"


def test_an_import_from_a_url_in_the_admin(
    owner: Client, tenant_a: Tenant, feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=True)
    feed_server.serve("/catalog.csv", csv_feed(range(2)))
    slug = tenant_a.business.slug

    response = owner.post(
        f"/app/{slug}/catalog/import-url/", {"url": feed_server.url("/catalog.csv"), "mode": "upsert"}
    )

    imp = Import.objects.filter(business=tenant_a.business).latest("created_at")
    assert response.status_code == 302 and response["Location"] == f"/app/{slug}/catalog/imports/{imp.pk}/"
    assert (imp.source_url, imp.mode, imp.state) == (feed_server.url("/catalog.csv"), "upsert", "pending")
    assert "url-import-form" in owner.get(f"/app/{slug}/catalog/").content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"url": "file:///etc/passwd", "mode": "upsert"}, "url", "Enter a valid URL."),
        ({"url": "http://10.0.0.5/feed.csv", "mode": "upsert"}, "url", "non-public address: refused"),
        ({"url": "", "mode": "upsert"}, "url", "This field is required."),
        ({"url": "https://shop.example/f.csv", "mode": "full"}, "confirm_full_sync", "Confirm the full sync"),
    ],
)
def test_bad_input_in_the_url_import_form(
    owner: Client,
    tenant_a: Tenant,
    fetch_rule: Callable[..., None],
    data: dict[str, Any],
    field: str,
    message: str,
) -> None:
    fetch_rule(allow_private=False)
    before = Import.objects.count()

    response = owner.post(f"/app/{tenant_a.business.slug}/catalog/import-url/", data)

    assert response.status_code == 400
    assert any(message in error for error in response.context["url_form"].errors[field])
    assert Import.objects.count() == before


def test_staff_may_not_start_a_full_sync_from_a_url(tenant_a: Tenant, catalog_media: Path) -> None:
    client = Client()
    client.force_login(tenant_a.staff)
    before = Import.objects.count()

    response = client.post(
        f"/app/{tenant_a.business.slug}/catalog/import-url/",
        {"url": "https://shop.example/f.csv", "mode": "full", "confirm_full_sync": "on"},
    )

    assert response.status_code == 403
    assert Import.objects.count() == before
