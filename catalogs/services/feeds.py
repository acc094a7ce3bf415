"""Feeds: a catalog synced from a URL on a schedule (docs/catalogs.md, "Feeds").

Celery beat calls ``feeds_claim_due`` every minute: one ``UPDATE ... RETURNING`` moves every due feed's
``next_run_at`` one interval on and queues ``catalogs.tasks.sync_feed`` for it, so two beats (or a beat and
"Run now") never queue the same run twice. ``feed_sync`` then takes the feed's run lease (a conditional
update of ``running_since``: a redelivered task finds it taken), fetches the URL (``common.safe_fetch``; a
conditional GET with the ETag / Last-Modified of the last content it accepted) and, when the content changed,
starts a full-sync import of it through the ordinary pipeline, queued on the ``ingest`` workers like an
upload. That import carries ``retire_limit_percent``: one that would retire more than the feed's threshold of
the active items is held (``Import.State.HELD``, nothing applied) until the owner confirms or discards it.

A fetch that fails is an ``Import`` in the history too (failed, with the reason), and the feed's
``last_outcome`` / ``last_error`` say so; the next interval tries again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from businesses.models import Business
from catalogs.importers import FileRejected
from catalogs.importers.storefronts import Record, shopify_records, woocommerce_records
from catalogs.models import FeedSource, Import
from catalogs.services.imports import FetchedFrom, ImportRejected, import_start, url_filename
from common.safe_fetch import FetchRefused, fetch
from common.tasks import enqueue_on_commit

# Products per page asked of each store API (their maximums).
SHOPIFY_PAGE_SIZE = 250
WOOCOMMERCE_PAGE_SIZE = 100
WOOCOMMERCE_PRODUCTS_PATH = "/wp-json/wc/store/v1/products"


@dataclass(frozen=True, slots=True)
class FeedRun:
    """What one run of a feed did."""

    outcome: str  # FeedSource.Outcome
    import_id: int | None = None
    error: str = ""


def feed_url_normalize(url: str, kind: str) -> str:
    """The URL a feed of this kind fetches: a store's address grows the API's path (``/products.json``,
    ``/wp-json/wc/store/v1/products``) when the owner gave the shop's home page."""
    parsed = httpx.URL(url)
    path = parsed.path.rstrip("/")
    if kind == FeedSource.Kind.SHOPIFY and not path.endswith("/products.json"):
        return str(parsed.copy_with(path=f"{path}/products.json"))
    if kind == FeedSource.Kind.WOOCOMMERCE and "/wp-json/" not in f"{path}/":
        return str(parsed.copy_with(path=f"{path}{WOOCOMMERCE_PRODUCTS_PATH}"))
    return url


def feed_create(
    *, business: Business, url: str, kind: str, interval_minutes: int, shrink_threshold_percent: int
) -> FeedSource:
    """Add a feed; its first run is queued at once (once the row has committed)."""
    with transaction.atomic(durable=True):
        feed = FeedSource.objects.create(
            business=business,
            url=feed_url_normalize(url, kind),
            kind=kind,
            interval_minutes=interval_minutes,
            shrink_threshold_percent=shrink_threshold_percent,
            next_run_at=timezone.now() + timedelta(minutes=interval_minutes),
        )
        enqueue_on_commit("catalogs.tasks.sync_feed", feed.pk)
    return feed


def feed_update(
    *, feed: FeedSource, interval_minutes: int, shrink_threshold_percent: int, is_active: bool
) -> FeedSource:
    """Change a feed's schedule and threshold; a new interval counts from its last run (or from now)."""
    feed.interval_minutes = interval_minutes
    feed.shrink_threshold_percent = shrink_threshold_percent
    feed.is_active = is_active
    feed.next_run_at = (feed.last_run_at or timezone.now()) + timedelta(minutes=interval_minutes)
    feed.save(update_fields=["interval_minutes", "shrink_threshold_percent", "is_active", "next_run_at"])
    return feed


def feed_delete(*, feed: FeedSource) -> None:
    """Remove a feed; its imports stay in the history (without their feed), a held one is discarded."""
    with transaction.atomic(durable=True):
        _discard_held(feed, note="Discarded: its feed was deleted.")
        feed.delete()


def feed_run_now(*, feed: FeedSource) -> None:
    """Queue a run now ("Run now" in the admin); the next scheduled one comes an interval later."""
    with transaction.atomic(durable=True):
        FeedSource.objects.filter(pk=feed.pk).update(
            next_run_at=timezone.now() + timedelta(minutes=feed.interval_minutes)
        )
        enqueue_on_commit("catalogs.tasks.sync_feed", feed.pk)


def feeds_claim_due(*, now: datetime | None = None) -> list[int]:
    """Claim every active feed whose time has come and queue a run of each; returns their ids.

    One UPDATE claims them all: a second beat running the same statement waits for the row locks, then sees
    the new ``next_run_at`` and skips those rows (Postgres re-checks the WHERE of a locked row).
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE catalogs_feedsource SET next_run_at = %(now)s + interval_minutes * interval '1 minute' "
                "WHERE is_active AND next_run_at <= %(now)s RETURNING id",
                {"now": now},
            )
            claimed = sorted(row[0] for row in cursor.fetchall())
        for feed_id in claimed:
            enqueue_on_commit("catalogs.tasks.sync_feed", feed_id)
    return claimed


def feed_sync(*, feed_id: int, enqueue: bool = True) -> FeedRun | None:
    """One run of a feed (the task ``sync_feed``). ``None`` when the feed is gone, inactive, or another
    worker holds its run (a redelivered task): nothing is done then. The import it starts is queued on the
    ingest workers; with ``enqueue=False`` the caller runs it (``imports.import_run``: the benchmark)."""
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.FEED_RUN_LEASE_SECONDS)
    claimed = (
        FeedSource.objects.filter(pk=feed_id, is_active=True)
        .filter(Q(running_since__isnull=True) | Q(running_since__lt=lease_expired))
        .update(running_since=now)
    )
    if not claimed:
        return None
    feed = FeedSource.objects.select_related("business").get(pk=feed_id)
    run = FeedRun(FeedSource.Outcome.FAILED, error="internal error; the catalog was not changed")
    try:
        run = _run(feed, enqueue=enqueue)
    finally:
        FeedSource.objects.filter(pk=feed_id, running_since=now).update(
            running_since=None, last_run_at=now, last_outcome=run.outcome, last_error=run.error
        )
    return run


def _run(feed: FeedSource, *, enqueue: bool) -> FeedRun:
    if feed.imports.filter(state__in=[Import.State.PENDING, Import.State.RUNNING]).exists():
        return FeedRun(FeedSource.Outcome.BUSY)
    # The content last accepted (applied, held or discarded by the owner): its validators make the GET
    # conditional, and its hash spots a server that answers 200 with the same bytes. A failed import is not a
    # baseline: the next run fetches again.
    baseline = (
        feed.imports.filter(
            state__in=[Import.State.SUCCEEDED, Import.State.HELD, Import.State.DISCARDED],
            source_sha256__gt="",
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    with tempfile.TemporaryDirectory(prefix="feed-") as folder:
        try:
            fetched = _download(feed, Path(folder), baseline)
            if fetched is None:
                return FeedRun(FeedSource.Outcome.NOT_MODIFIED)
            path, origin, requested_format = fetched
            if baseline is not None and origin.sha256 == baseline.source_sha256:
                return FeedRun(FeedSource.Outcome.UNCHANGED)
            imp = import_start(
                business=feed.business,
                path=path,
                filename=path.name,
                mode=Import.Mode.FULL,
                format=requested_format,
                fetched_from=origin,
                feed=feed,
                retire_limit_percent=feed.shrink_threshold_percent,
                enqueue=enqueue,
            )
        except (FetchRefused, FileRejected, ImportRejected) as exc:
            failed = _record_failure(feed, str(exc))
            return FeedRun(FeedSource.Outcome.FAILED, failed.pk, failed.error_message)
    # The newer content replaces a run still waiting for the owner's decision.
    with transaction.atomic(durable=True):
        _discard_held(feed, note=f"Superseded by a newer fetch (import {imp.pk}).", keep=imp.pk)
    return FeedRun(FeedSource.Outcome.IMPORTED, imp.pk)


def _download(
    feed: FeedSource, folder: Path, baseline: Import | None
) -> tuple[Path, FetchedFrom, str] | None:
    """Fetch the feed into ``folder``: the file, where it came from, and the format to read it as ("" to
    detect it); None for a 304. A store API's pages become one JSON Lines file of product records."""
    if feed.kind == FeedSource.Kind.FEED:
        path = folder / url_filename(feed.url)
        with path.open("wb") as out:
            got = fetch(
                feed.url,
                out,
                max_bytes=settings.CATALOG_MAX_UPLOAD_BYTES,
                etag=baseline.source_etag if baseline else "",
                last_modified=baseline.source_last_modified if baseline else "",
            )
        if got.status == 304:
            return None
        if got.size == 0:
            raise FileRejected(f"{feed.url} answered with an empty body")
        origin = FetchedFrom(feed.url, got.etag, got.last_modified, _sha256(path))
        return path, origin, ""
    path = folder / f"{feed.kind}-products.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for record in _store_records(feed):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    if path.stat().st_size == 0:
        raise FileRejected(f"{feed.url} lists no products")
    return path, FetchedFrom(feed.url, sha256=_sha256(path)), "jsonl"


def _store_records(feed: FeedSource) -> Iterator[Record]:
    """Every product record of a Shopify or WooCommerce store, page by page (at most FEED_MAX_PAGES; a store
    with more is refused rather than imported in part, which a full sync would turn into retired items)."""
    shopify = feed.kind == FeedSource.Kind.SHOPIFY
    size = SHOPIFY_PAGE_SIZE if shopify else WOOCOMMERCE_PAGE_SIZE
    store = str(httpx.URL(feed.url).copy_with(path="/", query=None, fragment=None)).rstrip("/")
    total_bytes = 0
    for number in range(1, settings.FEED_MAX_PAGES + 1):
        params = {"limit": size, "page": number} if shopify else {"per_page": size, "page": number}
        buffer = BytesIO()
        got = fetch(
            str(httpx.URL(feed.url).copy_merge_params(params)),
            buffer,
            max_bytes=settings.FEED_MAX_PAGE_BYTES,
            accept="application/json",
        )
        total_bytes += got.size
        if total_bytes > settings.CATALOG_MAX_UPLOAD_BYTES:
            raise FileRejected(f"the store's pages exceed {settings.CATALOG_MAX_UPLOAD_BYTES:,} bytes in all")
        try:
            page = json.loads(buffer.getvalue())
            records = shopify_records(page, store_url=store) if shopify else woocommerce_records(page)
        except (ValueError, RecursionError) as exc:
            raise FileRejected(f"page {number} of {feed.url} is not valid JSON") from exc
        except FileRejected as exc:
            raise FileRejected(f"page {number} of {feed.url} is {exc}") from exc
        yield from records
        # WooCommerce says how many pages there are; a store's last page is the first one not full.
        listed = len(page["products"]) if shopify else len(page)
        total_pages = got.headers.get("x-wp-totalpages", "")
        if listed < size or (total_pages.isdigit() and number >= int(total_pages)):
            return
    raise FileRejected(
        f"{feed.url} has more than {settings.FEED_MAX_PAGES} pages of products (FEED_MAX_PAGES): nothing imported"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_failure(feed: FeedSource, message: str) -> Import:
    """A run whose fetch failed, in the import history beside the imports (nothing was changed)."""
    now = timezone.now()
    return Import.objects.create(
        business=feed.business,
        feed=feed,
        original_filename=url_filename(feed.url),
        source_url=feed.url,
        mode=Import.Mode.FULL,
        state=Import.State.FAILED,
        phase=Import.Phase.DONE,
        error_message=f"{message}; the catalog was not changed",
        started_at=now,
        finished_at=now,
    )


def _discard_held(feed: FeedSource, *, note: str, keep: int | None = None) -> None:
    held = Import.objects.filter(feed=feed, state=Import.State.HELD)
    if keep is not None:
        held = held.exclude(pk=keep)
    held.update(
        state=Import.State.DISCARDED,
        finished_at=timezone.now(),
        error_message=Concat("error_message", Value(f" {note}")),
    )


def feed_import_confirm(*, business: Business, import_id: int) -> bool:
    """Apply a held import: it is queued again without its retire limit. False when it is not held (any
    more): confirmed or discarded already, or superseded by a newer fetch."""
    with transaction.atomic(durable=True):
        confirmed = Import.objects.filter(business=business, pk=import_id, state=Import.State.HELD).update(
            state=Import.State.PENDING,
            phase=Import.Phase.QUEUED,
            retire_limit_percent=None,
            error_message="",
            finished_at=None,
        )
        if confirmed:
            enqueue_on_commit("catalogs.tasks.run_import", import_id)
    return bool(confirmed)


def feed_import_discard(*, business: Business, import_id: int) -> bool:
    """Drop a held import: the catalog stays as it is. False when it is not held (any more)."""
    discarded = Import.objects.filter(business=business, pk=import_id, state=Import.State.HELD).update(
        state=Import.State.DISCARDED,
        finished_at=timezone.now(),
        error_message=Concat("error_message", Value(" Discarded by the owner.")),
    )
    return bool(discarded)
