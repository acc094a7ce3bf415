"""Celery tasks of the regression suite (queue ``ingest``: batch work, never ahead of a customer's reply)."""

from __future__ import annotations

from celery import shared_task

from regressions import services

# A suite of a few hundred questions, each a reply: well past the default limits, below the lease.
RUN_SOFT_TIME_LIMIT = 1500
RUN_TIME_LIMIT = 1560


@shared_task(
    acks_late=True, ignore_result=True, soft_time_limit=RUN_SOFT_TIME_LIMIT, time_limit=RUN_TIME_LIMIT
)
def run_suite(run_id: int) -> None:
    """Run one queued run. Safe to deliver twice: a running or finished run is not claimed again, and a
    deleted one is ignored."""
    services.run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def after_import(business_id: int) -> None:
    """Queued by a catalog import that succeeded (catalogs.services.imports): regenerate and run the suite
    of a business that has one; return at once for one that has none."""
    services.suite_after_import(business_id=business_id)
