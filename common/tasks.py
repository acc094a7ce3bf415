"""Queueing Celery tasks from services: by name, and after the current transaction commits.

Services never import task modules (a task module imports its services: that would be a cycle), and a task
never sees rows that are not committed yet. The queue comes from the task's name (``CELERY_TASK_ROUTES`` in
``config.celery``), as for a task called directly.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction

from common import tracing


def enqueue(name: str, *args: Any, countdown: float | None = None, **kwargs: Any) -> None:
    """Send task ``name`` with these arguments now (a caller that runs after the commit already), in the
    current trace."""
    current_app.send_task(
        name, args=args, kwargs=kwargs, countdown=countdown or None, headers=tracing.headers()
    )


def enqueue_on_commit(
    name: str, *args: Any, countdown: float | None = None, robust: bool = False, **kwargs: Any
) -> None:
    """Send task ``name`` with these arguments once the current transaction commits (at once outside one).

    ``robust``: a failed publish is logged, not raised, for a task whose row is its own outbox (a sweeper
    queues it again): the caller's write stands and its caller is not told it failed."""
    transaction.on_commit(lambda: enqueue(name, *args, countdown=countdown, **kwargs), robust=robust)
