"""End to end: the beat task claims a due feed, a REAL Celery worker fetches it from a loopback server and
imports it (``sync_feed`` then ``run_import`` on the ``ingest`` queue)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from catalogs.models import FeedSource, Import, Item
from catalogs.tasks import sync_due_feeds
from tests.catalogs.test_feeds import csv_feed
from tests.factories import BusinessFactory
from tests.fixtures.feeds import FeedServer
from tests.fixtures.stack import declare_queues


@pytest.mark.django_db(transaction=True)
def test_a_due_feed_is_fetched_and_imported_by_the_worker(
    celery_worker: Any, feed_server: FeedServer
) -> None:
    declare_queues()  # the per-test Redis flush removed the queue bindings
    business = BusinessFactory()
    feed_server.serve("/feed.csv", csv_feed(range(3)), etag='"v1"')
    # The worker runs with DEBUG on: private addresses are allowed there, as in development.
    feed = FeedSource.objects.create(
        business=business, url=feed_server.url("/feed.csv"), next_run_at=timezone.now() - timedelta(minutes=1)
    )

    assert sync_due_feeds() == 1
    assert sync_due_feeds() == 0  # claimed: the next beat does not queue it again

    deadline = time.monotonic() + 120
    imp = None
    while time.monotonic() < deadline:
        imp = Import.objects.filter(feed=feed).first()
        if imp is not None and imp.state in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    try:
        assert imp is not None, celery_worker.log()[-3000:]
        assert (imp.state, imp.error_message, imp.mode, imp.created_count) == ("succeeded", "", "full", 3)
        assert Item.objects.filter(business=business, is_active=True).count() == 3
        feed.refresh_from_db()
        assert (feed.last_outcome, feed.running_since) == ("imported", None)
        assert [r.path for r in feed_server.requests] == ["/feed.csv"]
    finally:
        if imp is not None and imp.file:
            imp.file.delete(save=False)
