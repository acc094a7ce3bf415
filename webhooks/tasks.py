"""Celery tasks of outbound webhooks (queue ``outbound``). Thin: ids in, a dispatcher call, safe to run
twice (webhooks.dispatch claims every row it works on)."""

from __future__ import annotations

from celery import shared_task

from webhooks import dispatch


@shared_task(name="webhooks.tasks.fan_out", acks_late=True)
def fan_out(event_id: int) -> int:
    """Create and queue the deliveries of an outbox event (queued on commit by outbox.emit)."""
    return len(dispatch.events_fan_out(event_id=event_id))


@shared_task(name="webhooks.tasks.deliver", acks_late=True)
def deliver(delivery_id: int, attempts: int) -> dispatch.Outcome:
    """Attempt a delivery that has had ``attempts`` attempts (a stale task finds the count moved on)."""
    return dispatch.delivery_attempt(delivery_id=delivery_id, attempts=attempts)


@shared_task(name="webhooks.tasks.sweep", acks_late=True)
def sweep() -> int:
    """Queue the due retries and what a lost publish or a dead worker left behind (celery beat, every
    OUTBOUND_WEBHOOK_SWEEP_SECONDS)."""
    return len(dispatch.deliveries_sweep())
