"""The reply task: a thin caller of ``messaging.replies.engine.run_reply`` on the worker's reply loop; and
the reply sweeper.

``reply(message_id)`` runs on the ``replies`` queue (acks_late and reject-on-worker-lost are global). The
reply runs on the worker process's long-lived event loop (``common.aio``); see messaging/replies/ for the
claim protocol, the lock and lease, and the stream. What it retries, and for how long, is
``messaging.replies.policy``'s.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from common import aio
from messaging.media import MediaUnavailable, media_purge
from messaging.media_reading import media_read, media_sweep
from messaging.replies import policy
from messaging.replies.engine import ReplyOutcome, run_reply
from messaging.replies.sweep import replies_abandon, replies_sweep

logger = logging.getLogger(__name__)


@shared_task(name="messaging.tasks.reply", bind=True, acks_late=True, max_retries=None)
def reply(
    self: Any, message_id: int, queued_at: float | None = None, failed_tries: int = 0, **known: Any
) -> ReplyOutcome:
    """``known``: what the sender already knows of the message (see ``run_reply``). ``failed_tries``: the
    tries of this task that met a transient error (policy, point 3)."""
    may_retry = failed_tries < policy.TRANSIENT_RETRIES
    try:
        outcome = aio.run(run_reply(message_id, queued_at, may_retry=may_retry, **known))
    except Exception as exc:
        if not (may_retry and policy.is_transient(exc)):
            raise
        failed_tries += 1
        logger.warning("reply to message %s: transient error, try %s again", message_id, failed_tries)
        raise self.retry(
            exc=exc,
            countdown=policy.transient_backoff(failed_tries),
            kwargs={**self.request.kwargs, "failed_tries": failed_tries},
            max_retries=None,
        ) from exc
    if outcome == "busy":
        # Another live worker holds the conversation or this message: come back when it may be done.
        raise self.retry(countdown=policy.BUSY_RETRY_SECONDS, max_retries=policy.busy_retries())
    return outcome


@shared_task(name="messaging.tasks.read_media", bind=True, acks_late=True, max_retries=5)
def read_media(self: Any, media_id: int) -> str | None:
    """Download and read a customer's photo or voice note, then settle its message (messaging.media_reading).
    Graph failing for now: tried again after 10 s, doubling; the sweeper picks up what is left."""
    try:
        return media_read(media_id=media_id)
    except MediaUnavailable as exc:
        raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc


@shared_task(name="messaging.tasks.sweep_replies", acks_late=True)
def sweep_replies() -> int:
    """Queue again the replies, and the readings of media, that got lost on their way; finish those given up
    (celery beat, every REPLY_SWEEP_SECONDS)."""
    replies_abandon()
    media_sweep()
    return len(replies_sweep())


@shared_task(name="messaging.tasks.purge_media", acks_late=True)
def purge_media() -> int:
    """Delete customers' photos and voice notes MESSAGE_MEDIA_RETENTION_DAYS after they came (celery beat)."""
    return media_purge()
