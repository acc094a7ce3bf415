"""Celery tasks of the catalog (queue ``ingest``, routed in config/celery.py)."""

from __future__ import annotations

import random

from celery import Task, shared_task

from catalogs import slots
from catalogs.services import feeds, imports

# An import of a large file with embeddings runs far longer than a reply: its own limits, below the lease
# (CATALOG_IMPORT_LEASE_SECONDS) so that a live run is never taken over.
IMPORT_SOFT_TIME_LIMIT = 3600
IMPORT_TIME_LIMIT = 3700


# An import whose business already has CATALOG_IMPORTS_PER_BUSINESS running waits this long (plus jitter)
# before it asks again, without holding a worker meanwhile.
SLOT_WAIT_SECONDS = 15


@shared_task(
    bind=True,
    acks_late=True,
    soft_time_limit=IMPORT_SOFT_TIME_LIMIT,
    time_limit=IMPORT_TIME_LIMIT,
    ignore_result=True,
    max_retries=None,
)
def run_import(self: Task, import_id: int) -> None:
    """Run one import. Safe to deliver twice: a finished or running import is not run again (the claim is a
    conditional update), and a deleted one is ignored. When its business already has its share of ingest
    workers (``catalogs.slots``), it is re-queued instead of waiting on a worker."""
    if not slots.import_run_limited(import_id=import_id):
        raise self.retry(countdown=SLOT_WAIT_SECONDS + random.uniform(0, SLOT_WAIT_SECONDS))


@shared_task(acks_late=True, ignore_result=True)
def purge_uploads() -> int:
    """Delete uploaded files CATALOG_UPLOAD_RETENTION_DAYS after their import finished (Celery beat)."""
    return imports.import_uploads_purge()


@shared_task(
    acks_late=True, soft_time_limit=IMPORT_SOFT_TIME_LIMIT, time_limit=IMPORT_TIME_LIMIT, ignore_result=True
)
def reembed_business(business_id: int) -> int:
    """Re-embed a business's items and chunks whose vector is missing or came from another model (after a
    change of EMBEDDINGS_BACKEND / EMBEDDINGS_MODEL). Safe to run twice: current vectors are skipped."""
    from catalogs.embeddings import reembed_stale

    return reembed_stale(business_id=business_id)


@shared_task(acks_late=True, ignore_result=True)
def sync_due_feeds() -> int:
    """Queue a run of every feed whose interval has come (Celery beat, every FEED_SYNC_SECONDS). Two beats at
    once claim each feed once (``feeds.feeds_claim_due``)."""
    return len(feeds.feeds_claim_due())


@shared_task(
    acks_late=True, soft_time_limit=IMPORT_SOFT_TIME_LIMIT, time_limit=IMPORT_TIME_LIMIT, ignore_result=True
)
def sync_feed(feed_id: int) -> None:
    """Fetch one feed and, when it changed, queue its import. Safe to deliver twice: the run is claimed with
    a lease (a second delivery during the run does nothing; one after it gets a 304 or the same content)."""
    feeds.feed_sync(feed_id=feed_id)
