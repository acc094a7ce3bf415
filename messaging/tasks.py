"""The reply task: a thin caller of ``messaging.replies.engine.run_reply`` on the worker's reply loop.

``reply(message_id)`` runs on the ``replies`` queue (acks_late and reject-on-worker-lost are global). The
reply runs on the worker process's long-lived event loop (``common.aio``); see messaging/replies/ for the
claim protocol, the lock and lease, and the stream.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from common import aio
from messaging.replies.engine import run_reply


@shared_task(name="messaging.tasks.reply", bind=True, acks_late=True, max_retries=None)
def reply(self: Any, message_id: int, queued_at: float | None = None, **known: Any) -> str:
    """``known``: what the sender already knows of the message (see ``run_reply``)."""
    outcome = aio.run(run_reply(message_id, queued_at, **known))
    if outcome == "busy":
        # Another live worker holds the conversation or this message: come back when it may be done.
        raise self.retry(countdown=0.25, max_retries=int(settings.REPLY_LEASE_SECONDS * 8))
    return outcome
