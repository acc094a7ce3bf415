"""Writes for delivery statuses: Meta's status webhooks (sent, delivered, read, failed) and read watermarks
move an outbound part, and its message, forward only."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from messaging.meta import graph, parser
from messaging.models import ChannelAccount, Message, OutboundPart

_RANK: dict[str, int] = {
    Message.Delivery.NONE.value: 0,
    Message.Delivery.QUEUED.value: 1,
    Message.Delivery.SENT.value: 2,
    Message.Delivery.DELIVERED.value: 3,
    Message.Delivery.READ.value: 4,
}


def delivery_advance(model: Any, pk: int, new: str) -> bool:
    """Move ``delivery`` forward only: sent < delivered < read; failed is final and beats everything."""
    qs = model.objects.filter(pk=pk).exclude(delivery=Message.Delivery.FAILED)
    if new != Message.Delivery.FAILED:
        qs = qs.filter(delivery__in=[d for d, rank in _RANK.items() if rank < _RANK[new]])
    return bool(qs.update(delivery=new))


def error_text(code: int | None, title: str) -> str:
    """What ``error`` says for an error Meta reported (synchronously or in a failed status)."""
    if code == graph.WINDOW_CLOSED:
        return f"window closed (131047): {title}".strip().rstrip(":")
    return f"{code}: {title}" if code is not None else title


def _message_delivery_recompute(message_id: int) -> None:
    """A message is as far along as its least advanced sent part."""
    ranks = [
        _RANK.get(d, 0)
        for d in OutboundPart.objects.filter(
            message_id=message_id, state=OutboundPart.State.SENT
        ).values_list("delivery", flat=True)
    ]
    if not ranks:
        return
    lowest = min(ranks)
    target = next(d for d, rank in _RANK.items() if rank == lowest)
    if _RANK[target] >= _RANK[Message.Delivery.SENT]:
        delivery_advance(Message, message_id, target)


def delivery_status_apply(*, account: ChannelAccount, update: parser.StatusUpdate) -> str:
    """Apply a status webhook to the part (and message) it names, within the account's business only."""
    status = update.status
    if status == "played":
        status = Message.Delivery.READ
    if status not in (Message.Delivery.SENT, Message.Delivery.DELIVERED, Message.Delivery.READ, "failed"):
        return "unknown"
    part = (
        OutboundPart.objects.filter(
            business_id=account.business_id, channel=account.kind, channel_message_id=update.message_id
        )
        .only("pk", "message_id")
        .first()
    )
    if part is None:
        return "unmatched"
    with transaction.atomic(durable=True):
        if status == "failed":
            error = error_text(update.error_code, update.error_title)
            OutboundPart.objects.filter(pk=part.pk).update(
                delivery=Message.Delivery.FAILED, error=error[:2000]
            )
            if delivery_advance(Message, part.message_id, Message.Delivery.FAILED):
                Message.objects.filter(pk=part.message_id).update(error=error[:2000])
            return "failed"
        if not delivery_advance(OutboundPart, part.pk, status):
            return "stale"
        _message_delivery_recompute(part.message_id)
    return status


def read_watermark_apply(*, account: ChannelAccount, read: parser.ReadWatermark) -> int:
    """Messenger/Instagram read receipts name a time, not a message: every part sent to that person up to
    then is read. Returns how many parts moved."""
    parts = list(
        OutboundPart.objects.filter(
            business_id=account.business_id,
            channel=account.kind,
            message__conversation__contact__external_id=read.user_id,
            state=OutboundPart.State.SENT,
            sent_at__lte=read.watermark,
        )
        .exclude(delivery__in=[Message.Delivery.READ, Message.Delivery.FAILED])
        .values_list("pk", "message_id")
    )
    with transaction.atomic(durable=True):
        for pk, _ in parts:
            delivery_advance(OutboundPart, pk, Message.Delivery.READ)
        for message_id in {m for _, m in parts}:
            _message_delivery_recompute(message_id)
    return len(parts)
