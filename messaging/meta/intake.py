"""Writes for webhook intake: storing verified deliveries, processing them into conversations and messages
(inbound messages de-duplicated on the platform's id, statuses handed to ``statuses``), and purging their
bodies once processed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from typing import Literal

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalogs.selectors import items_by_ids
from common.redis import sync_client
from common.tasks import enqueue, enqueue_on_commit
from messaging.media_reading import media_message_receive
from messaging.meta import outbound, parser, products, rating, statuses
from messaging.meta import selectors as meta_selectors
from messaging.meta.orders import order_receive
from messaging.models import ChannelAccount, Conversation, Message, Order, WebhookDelivery
from messaging.selectors import last_customer_text
from messaging.services import (
    CSAT_SCORES,
    conversation_csat,
    conversation_customer_wrote,
    conversation_open,
    fixed_reply_send,
    message_receive,
)

logger = logging.getLogger(__name__)

# A delivery claimed longer ago than this belongs to a dead worker and may be taken over.
CLAIM_LEASE = dt.timedelta(minutes=5)


def _candidate_ids(raw_body: bytes) -> set[str]:
    """Ids a delivery names, for finding which per-account secret may have signed it."""
    try:
        payload = json.loads(raw_body)
    except ValueError:
        return set()
    ids: set[str] = set()
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        ids.add(str(entry.get("id") or ""))
        for change in entry.get("changes") or []:
            if isinstance(change, dict) and isinstance(change.get("value"), dict):
                metadata = change["value"].get("metadata")
                if isinstance(metadata, dict):
                    ids.add(str(metadata.get("phone_number_id") or ""))
        for event in entry.get("messaging") or []:
            if isinstance(event, dict) and isinstance(event.get("recipient"), dict):
                ids.add(str(event["recipient"].get("id") or ""))
    ids.discard("")
    return ids


def webhook_signers(raw_body: bytes, header: str, keys: list[meta_selectors.SigningKey]) -> list[int] | None:
    """The accounts whose own app secret signed this body, or None when none did. No database work: ``keys``
    come from ``meta_selectors.signing_keys_*``. The body is parsed only once a secret has verified it (to
    check it names an account of that secret); a forged one costs one HMAC per distinct secret."""
    from messaging.meta.signature import signature_valid

    matching = [key for key in keys if signature_valid(raw_body, header, key.secret)]
    if not matching:
        return None
    ids = _candidate_ids(raw_body)
    verified = sorted(pk for key in matching for pk, account_ids in key.accounts if account_ids & ids)
    return verified or None


def delivery_digest(body: bytes, verified_accounts: list[int]) -> str:
    """What makes a delivery a replay: the raw bytes (not the parsed JSON: other whitespace is another body,
    and needs its own valid signature) and who signed them (the deployment's app, or a tenant's own secret
    for these accounts), so bytes one tenant signs never shadow another's delivery."""
    signer = ",".join(map(str, sorted(verified_accounts))) or "app"
    return hashlib.sha256(signer.encode() + b"\n" + body).hexdigest()


# Processing is scheduled, not enqueued per delivery: a Celery publish costs several times the insert, and
# at 500 deliveries/s it would be most of the intake's CPU. The first delivery sets this flag and queues
# ``process_pending``; later ones see it set and queue nothing, because that task clears the flag BEFORE it
# looks for pending rows, so it (or the task queued after it) sees every row committed before the flag was
# set. The TTL bounds the damage of a lost publish; ``sweep_deliveries`` picks up anything left behind.
SCHEDULE_FLAG = "bizagent:meta:process-scheduled"
SCHEDULE_TTL_SECONDS = 10


def _schedule_processing() -> None:
    try:
        if not sync_client().set(SCHEDULE_FLAG, "1", nx=True, ex=SCHEDULE_TTL_SECONDS):
            return
    except redis.RedisError:
        logger.warning("webhook processing: Redis unavailable, queueing without coalescing")
    enqueue("messaging.meta.tasks.process_pending")


def processing_schedule_clear() -> None:
    """Called by ``process_pending`` before it reads pending rows (see SCHEDULE_FLAG)."""
    try:
        sync_client().delete(SCHEDULE_FLAG)
    except redis.RedisError:
        logger.warning("webhook processing: could not clear the schedule flag")


def webhook_deliveries_process_pending(*, batch: int = 100) -> int:
    """Process pending deliveries, oldest first, until none is left. Several workers may run this at once:
    each delivery is claimed by a conditional update. Returns how many this call processed."""
    done = 0
    while True:
        ids = list(
            WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING)
            .order_by("received_at", "pk")
            .values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return done
        for delivery_id in ids:
            try:
                if webhook_delivery_process(delivery_id=delivery_id) is not None:
                    done += 1
            except Exception:
                # Recorded on the row as failed; the sweeper retries it. The rest of the batch goes on.
                logger.exception("webhook delivery %s failed", delivery_id)


def webhook_delivery_store(
    *, platform: str, body: bytes, signature: str, verified_accounts: list[int] | None = None
) -> int | None:
    """Store a verified delivery (committed before the caller answers 200) and queue its processing. None
    when the same delivery was stored before (a replay: Meta retries for up to 7 days): nothing is stored or
    queued, and the caller still answers 200."""
    verified = verified_accounts or []
    digest = delivery_digest(body, verified)
    try:
        with transaction.atomic(durable=True):
            delivery = WebhookDelivery.objects.create(
                platform=platform,
                body=body,
                signature=signature[:100],
                verified_accounts=verified,
                body_sha256=digest,
            )
            transaction.on_commit(_schedule_processing)
    except IntegrityError:
        if WebhookDelivery.objects.filter(platform=platform, body_sha256=digest).exists():
            return None
        raise
    return delivery.pk


def webhook_bodies_purge(*, older_than: dt.timedelta, batch: int = 1000) -> int:
    """Empty the bodies of deliveries received more than ``older_than`` ago that are done or failed (they
    hold customers' messages); the rows keep their metadata and digest. Pending and running ones are kept.
    Short transactions of ``batch`` rows; safe to run twice. Returns how many were emptied."""
    cutoff = timezone.now() - older_than
    finished = [WebhookDelivery.State.DONE, WebhookDelivery.State.FAILED]
    purged = 0
    while True:
        ids = list(
            WebhookDelivery.objects.filter(
                state__in=finished, received_at__lt=cutoff, body_purged_at__isnull=True
            ).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return purged
        with transaction.atomic(durable=True):
            # The state again: a failed row the sweeper has just claimed is left to it.
            purged += WebhookDelivery.objects.filter(pk__in=ids, state__in=finished).update(
                body=b"", body_purged_at=timezone.now()
            )
        if len(ids) < batch:
            return purged


def _route(
    delivery: WebhookDelivery,
    platform: str,
    account_id: str,
    cache: dict[tuple[str, str], ChannelAccount | None],
) -> ChannelAccount | None:
    key = (platform, account_id)
    if key not in cache:
        account = meta_selectors.route_account(platform, account_id)
        if account is not None:
            if delivery.verified_accounts:
                # Signed with a tenant's own secret: only that tenant's accounts may receive it.
                if account.pk not in delivery.verified_accounts:
                    account = None
            elif account.app_secret:
                # The account has its own app; a delivery signed by the deployment's app is not for it.
                account = None
        cache[key] = account
    return cache[key]


def webhook_delivery_process(*, delivery_id: int) -> dict[str, int] | None:
    """Parse a stored delivery and act on every event in it. Safe to run twice: inbound messages are
    de-duplicated on their platform id and statuses only move forward. None when another worker holds it
    or it is already done."""
    now = timezone.now()
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id)
        .filter(
            Q(state__in=[WebhookDelivery.State.PENDING, WebhookDelivery.State.FAILED])
            | Q(state=WebhookDelivery.State.PROCESSING, claimed_at__lt=now - CLAIM_LEASE)
        )
        .update(state=WebhookDelivery.State.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    try:
        summary, business_id = _process(delivery)
    except Exception as exc:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            state=WebhookDelivery.State.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        state=WebhookDelivery.State.DONE,
        processed_at=timezone.now(),
        summary=summary,
        business_id=business_id,
        error="",
    )
    return summary


def _process(delivery: WebhookDelivery) -> tuple[dict[str, int], int | None]:
    summary: Counter[str] = Counter()
    try:
        payload = json.loads(bytes(delivery.body))
    except ValueError:
        summary["not_json"] += 1
        return dict(summary), None
    parsed = parser.parse(payload, platform=delivery.platform)
    cache: dict[tuple[str, str], ChannelAccount | None] = {}
    for event in sorted(parsed.messages, key=lambda m: m.timestamp):
        account = _route(delivery, event.platform, event.account_id, cache)
        if account is None:
            summary["unrouted"] += 1
            continue
        summary[_inbound(account, event)] += 1
    for status in parsed.statuses:
        account = _route(delivery, status.platform, status.account_id, cache)
        if account is None:
            summary["unrouted"] += 1
            continue
        summary["status_" + statuses.delivery_status_apply(account=account, update=status)] += 1
    for read in parsed.reads:
        account = _route(delivery, read.platform, read.account_id, cache)
        if account is None:
            summary["unrouted"] += 1
            continue
        summary["read_watermark"] += statuses.read_watermark_apply(account=account, read=read)
    summary["ignored"] += len(parsed.ignored)
    routed = [account for account in cache.values() if account is not None]
    if routed:
        ChannelAccount.objects.filter(pk__in=[a.pk for a in routed]).update(last_delivery_at=timezone.now())
    return {k: v for k, v in summary.items() if v}, (routed[0].business_id if routed else None)


# What became of an inbound message (counted in the delivery's summary).
InboundOutcome = Literal[
    "received",
    "duplicate",
    "unsupported",
    "order",
    "rating",
    "rating_refused",
    "photo",
    "voice",
]


def _question(account: ChannelAccount, event: parser.InboundMessage) -> str:
    """What the agent is asked: the text, or for a tap on one of our product buttons or list rows (its payload
    names the item: messaging.meta.products) the product's title, so that the answer is that product's."""
    item_id = products.item_id_of(event.payload)
    if item_id is not None:
        item = items_by_ids(account.business, [item_id]).get(item_id)
        if item is not None:
            return item.title
    return event.text


def _inbound(account: ChannelAccount, event: parser.InboundMessage) -> InboundOutcome:
    if not event.supported:
        return "unsupported" if _unsupported_receive(account, event) else "duplicate"
    if event.media_kind:
        return _media_receive(account, event)
    tapped = rating.rating_of(event.payload)
    if tapped is not None:
        # A rating choice: it scores the closed conversation it names, and opens no new one. A payload naming
        # another contact's or business's conversation, or an out-of-range score, stores nothing.
        conversation_id, score = tapped
        rated = score in CSAT_SCORES and conversation_csat(
            business=account.business,
            visitor_id=event.sender_id,
            conversation_id=conversation_id,
            score=score,
            channel=account.kind,
        )
        return "rating" if rated else "rating_refused"
    stored: Order | Message | None
    if event.order is not None:
        stored = order_receive(
            account=account,
            sender_id=event.sender_id,
            sender_name=event.sender_name,
            message_id=event.message_id,
            received_at=event.timestamp,
            cart=event.order,
        )
    else:
        stored = message_receive(
            business=account.business,
            channel=account.kind,
            contact_external_id=event.sender_id,
            text=_question(account, event),
            channel_message_id=event.message_id,
            contact_name=event.sender_name,
            received_at=event.timestamp,
        )
    if stored is None:
        return "duplicate"
    _mark_read(account, event)
    return "order" if isinstance(stored, Order) else "received"


def _mark_read(account: ChannelAccount, event: parser.InboundMessage) -> None:
    if settings.META_MARK_READ:
        enqueue_on_commit("messaging.meta.tasks.mark_read", account.pk, event.sender_id, event.message_id)


def _media_receive(account: ChannelAccount, event: parser.InboundMessage) -> InboundOutcome:
    """A photo or voice note: stored as a message being read, its download and reading queued
    (messaging.media_reading); the reply waits for it. A redelivery is not downloaded again."""
    stored = media_message_receive(
        business=account.business,
        channel=account.kind,
        contact_external_id=event.sender_id,
        kind=event.media_kind,
        caption=event.text,
        channel_message_id=event.message_id,
        contact_name=event.sender_name,
        received_at=event.timestamp,
        source=event.media_id or event.media_url,
        account=account,
    )
    if stored is None:
        return "duplicate"
    _mark_read(account, event)
    return "voice" if event.media_kind == "audio" else "photo"


def _unsupported_receive(account: ChannelAccount, event: parser.InboundMessage) -> Message | None:
    """A message the agent cannot read (a video, a sticker, a type Meta adds tomorrow): stored (for the inbox),
    answered with a fixed note saying what works, in the language of the customer's words so far (there is
    nothing to ground a model's answer on). Silent when a person has the conversation. The stored customer
    message, or None for a duplicate."""
    with transaction.atomic(durable=True):
        conversation = conversation_open(
            business=account.business,
            channel=account.kind,
            contact_external_id=event.sender_id,
            contact_name=event.sender_name,
        )
        bot = conversation.state == Conversation.State.BOT
        try:
            with transaction.atomic():
                customer = Message.objects.create(
                    business=account.business,
                    conversation=conversation,
                    channel=account.kind,
                    role=Message.Role.CUSTOMER,
                    text=event.text or f"[{event.kind}]",
                    status=Message.Status.ANSWERED if bot else Message.Status.SKIPPED,
                    channel_message_id=event.message_id,
                )
        except IntegrityError:
            return None
        conversation_customer_wrote(conversation_id=conversation.pk, at=event.timestamp)
        if bot:
            hint = event.text or last_customer_text(conversation.pk, before=customer.pk)
            fixed_reply_send(
                conversation=conversation,
                customer=customer,
                text=outbound.unsupported_reply(event.kind, hint),
                language_hint=hint,
            )
    return customer
