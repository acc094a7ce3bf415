"""Celery tasks of the catalog (queue ``ingest``, routed in config/celery.py)."""

from __future__ import annotations

from celery import shared_task

from catalogs import services

# An import of a large file with embeddings runs far longer than a reply: its own limits, below the lease
# (CATALOG_IMPORT_LEASE_SECONDS) so that a live run is never taken over.
IMPORT_SOFT_TIME_LIMIT = 3600
IMPORT_TIME_LIMIT = 3700


@shared_task(
    acks_late=True, soft_time_limit=IMPORT_SOFT_TIME_LIMIT, time_limit=IMPORT_TIME_LIMIT, ignore_result=True
)
def run_import(import_id: int) -> None:
    """Run one import. Safe to deliver twice: a finished or running import is not run again (the claim is a
    conditional update), and a deleted one is ignored."""
    services.import_run(import_id=import_id)


@shared_task(
    acks_late=True, soft_time_limit=IMPORT_SOFT_TIME_LIMIT, time_limit=IMPORT_TIME_LIMIT, ignore_result=True
)
def reembed_business(business_id: int) -> int:
    """Re-embed a business's items and chunks whose vector is missing or came from another model (after a
    change of EMBEDDINGS_BACKEND / EMBEDDINGS_MODEL). Safe to run twice: current vectors are skipped."""
    from catalogs.embeddings import reembed_stale

    return reembed_stale(business_id=business_id)
