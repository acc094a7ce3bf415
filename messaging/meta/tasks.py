"""Celery tasks for messaging channels. Thin: ids in, a service call, safe to run twice.

Queues (config/celery.py): ``process_pending`` and ``process_delivery`` on ``replies`` (a customer is
waiting), sends and read receipts on ``outbound``, the sweeper on ``ingest``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from messaging.meta import graph, intake, sending

logger = logging.getLogger(__name__)

SEND_MAX_RETRIES = 5


@shared_task(name="messaging.meta.tasks.process_delivery", acks_late=True, max_retries=5)
def process_delivery(delivery_id: int) -> dict[str, int] | None:
    """Parse a stored webhook delivery and act on it (messages, statuses)."""
    return intake.webhook_delivery_process(delivery_id=delivery_id)


@shared_task(name="messaging.meta.tasks.process_pending", acks_late=True)
def process_pending() -> int:
    """Process every pending delivery (queued by the webhook view, at most one queued at a time)."""
    intake.processing_schedule_clear()
    return intake.webhook_deliveries_process_pending()


@shared_task(
    bind=True, name="messaging.meta.tasks.send_message", acks_late=True, max_retries=SEND_MAX_RETRIES
)
def send_message(self: Any, message_id: int) -> sending.SendOutcome:
    """Send an agent or staff message on its channel. Parts already sent, and a part Meta may have taken
    without our knowing (``ambiguous``: reported, not retried), are never sent again."""
    try:
        outcome = sending.message_send(message_id=message_id)
    except graph.TransientGraphError as exc:
        if self.request.retries >= SEND_MAX_RETRIES:
            sending.message_send_give_up(message_id=message_id, error=str(exc))
            return "failed"
        # Graph kept failing within this run's tries: give Meta a longer pause before the next run.
        raise self.retry(countdown=min(30 * 2**self.request.retries, 600)) from exc
    if outcome == "busy" and self.request.retries < SEND_MAX_RETRIES:
        # Another run holds a part (or died holding it): look again once its lease may have run out.
        raise self.retry(countdown=sending.CLAIM_LEASE.total_seconds() / 2)
    return outcome


@shared_task(name="messaging.meta.tasks.sweep_sends", acks_late=True)
def sweep_sends() -> int:
    """Queue again the sends whose task was lost with its worker (celery beat, every SEND_SWEEP_SECONDS)."""
    return len(sending.sends_sweep())


@shared_task(name="messaging.meta.tasks.mark_read", acks_late=True)
def mark_read(account_id: int, contact_id: str, message_id: str) -> bool:
    """Read receipt and typing indicator for an inbound message (best effort)."""
    return sending.mark_read_send(account_id=account_id, contact_id=contact_id, message_id=message_id)


@shared_task(name="messaging.meta.tasks.sweep_deliveries", acks_late=True)
def sweep_deliveries(older_than_seconds: int = 60) -> int:
    """Re-queue deliveries still pending or failed after a while (the enqueue after commit was lost, or the
    broker was down). Run it periodically (celery beat, cron: ``manage.py shell -c``)."""
    from messaging.models import WebhookDelivery

    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    ids = list(
        WebhookDelivery.objects.filter(
            state__in=[WebhookDelivery.State.PENDING, WebhookDelivery.State.FAILED],
            received_at__lt=cutoff,
            attempts__lt=10,
        ).values_list("pk", flat=True)[:1000]
    )
    for delivery_id in ids:
        process_delivery.delay(delivery_id)
    return len(ids)


@shared_task(name="messaging.meta.tasks.purge_webhook_bodies", acks_late=True)
def purge_webhook_bodies() -> int:
    """Empty the bodies of deliveries processed more than WEBHOOK_BODY_RETENTION_DAYS ago, keeping the rows
    (celery beat, every WEBHOOK_PURGE_SECONDS)."""
    return intake.webhook_bodies_purge(older_than=dt.timedelta(days=settings.WEBHOOK_BODY_RETENTION_DAYS))
