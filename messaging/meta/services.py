"""Writes for messaging channels: connecting accounts, storing and processing webhook deliveries, sending.

Graph API calls happen outside transactions (read, commit, call, then write in a short transaction).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from collections import Counter
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from businesses.models import Business
from common.tasks import enqueue
from messaging.meta import graph, outbound, ownership, parser
from messaging.meta import selectors as meta_selectors
from messaging.models import ChannelAccount, Conversation, Message, OutboundPart, WebhookDelivery
from messaging.services import conversation_open, message_receive

logger = logging.getLogger(__name__)

WINDOW = dt.timedelta(hours=24)
HUMAN_AGENT_WINDOW = dt.timedelta(days=7)
# A delivery or a part claimed longer ago than this belongs to a dead worker and may be taken over.
CLAIM_LEASE = dt.timedelta(minutes=5)

_RANK: dict[str, int] = {
    Message.Delivery.NONE.value: 0,
    Message.Delivery.QUEUED.value: 1,
    Message.Delivery.SENT.value: 2,
    Message.Delivery.DELIVERED.value: 3,
    Message.Delivery.READ.value: 4,
}


class ChannelAccountError(ValueError):
    """A connect request that cannot be honoured (missing id or token, id connected to another business)."""


# --- Accounts ---------------------------------------------------------------------------------------------------


_REQUIRED: dict[str, tuple[str, ...]] = {
    ChannelAccount.Kind.WHATSAPP.value: ("phone_number_id",),
    ChannelAccount.Kind.MESSENGER.value: ("page_id",),
    ChannelAccount.Kind.INSTAGRAM.value: ("instagram_account_id",),
}


def channel_account_connect(
    *,
    business: Business,
    kind: str,
    access_token: str,
    name: str = "",
    waba_id: str = "",
    phone_number_id: str = "",
    display_phone_number: str = "",
    page_id: str = "",
    instagram_account_id: str = "",
    app_secret: str = "",
    verify_token: str = "",
    template_name: str = "",
    template_language: str = "en_US",
) -> ChannelAccount:
    """Connect (or reconnect, replacing the token) a WhatsApp number, Messenger page or Instagram account,
    once Meta has confirmed that the token controls it (``messaging.meta.ownership``).

    WhatsApp needs ``waba_id`` and ``phone_number_id``; Messenger ``page_id`` (with that page's token);
    Instagram ``page_id`` (the Facebook Page that sends for it, with its token) and optionally
    ``instagram_account_id``, which must be the account Meta says is linked to the page. Only what Meta
    confirmed is stored: ``display_phone_number`` comes from Meta, the argument is ignored. ``app_secret``
    empty: the deployment's META_APP_SECRET verifies its webhooks. Raises ChannelAccountError when an id or
    the token is missing, when Meta does not confirm the ids (or cannot be reached), or when the id is
    connected to another business."""
    del display_phone_number  # taken from Meta's answer
    if kind not in _REQUIRED:
        raise ChannelAccountError(f"unknown channel kind {kind!r}")
    token = access_token.strip()
    waba_id, phone_number_id = waba_id.strip(), phone_number_id.strip()
    page_id, instagram_account_id = page_id.strip(), instagram_account_id.strip()
    needed = {
        ChannelAccount.Kind.WHATSAPP.value: {"waba_id": waba_id, "phone_number_id": phone_number_id},
        ChannelAccount.Kind.MESSENGER.value: {"page_id": page_id},
        ChannelAccount.Kind.INSTAGRAM.value: {"page_id": page_id},
    }[kind]
    for field_name, value in needed.items():
        if not value:
            raise ChannelAccountError(f"{field_name} is required for {kind}")
    if not token:
        raise ChannelAccountError("access_token is required")
    # Asked before anything is read or written: whether an id is taken is nobody's business but its owner's.
    try:
        if kind == ChannelAccount.Kind.WHATSAPP:
            confirmed = ownership.whatsapp(token=token, waba_id=waba_id, phone_number_id=phone_number_id)
        elif kind == ChannelAccount.Kind.MESSENGER:
            confirmed = ownership.page(token=token, page_id=page_id)
        else:
            confirmed = ownership.instagram(
                token=token, page_id=page_id, instagram_account_id=instagram_account_id
            )
    except ownership.OwnershipError as exc:
        logger.info("channel connect refused for business %s (%s): %s", business.pk, kind, exc)
        raise ChannelAccountError(str(exc)) from exc
    return _account_save(
        business=business,
        kind=kind,
        confirmed=confirmed,
        access_token=token,
        name=name.strip() or confirmed.name,
        app_secret=app_secret,
        verify_token=verify_token,
        template_name=template_name,
        template_language=template_language,
    )


def channel_account_connect_embedded(
    *,
    business: Business,
    code: str,
    waba_id: str = "",
    phone_number_id: str = "",
    name: str = "",
    template_name: str = "",
    template_language: str = "en_US",
) -> ChannelAccount:
    """Connect a WhatsApp number through Embedded Signup: ``code`` is what the JS SDK's ``FB.login`` returned
    (``authResponse.code``); ``waba_id`` / ``phone_number_id`` are the session info the popup posted
    (``WA_EMBEDDED_SIGNUP`` / ``FINISH``), used only to choose among what Meta says was granted. The code is
    exchanged for the business token, the app is subscribed to the WABA's webhooks, and the account is
    stored with the ids Meta confirmed. Raises ChannelAccountError like ``channel_account_connect``."""
    if not code.strip():
        raise ChannelAccountError("code is required")
    try:
        token, confirmed = ownership.embedded_signup(
            code=code.strip(), waba_id=waba_id.strip(), phone_number_id=phone_number_id.strip()
        )
        # Taken before subscribing: a number connected to another business must not be re-subscribed here.
        _ensure_free(business, ChannelAccount.Kind.WHATSAPP.value, confirmed)
        ownership.subscribe_app(token=token, waba_id=confirmed.waba_id)
    except ownership.OwnershipError as exc:
        logger.info("embedded signup refused for business %s: %s", business.pk, exc)
        raise ChannelAccountError(str(exc)) from exc
    return _account_save(
        business=business,
        kind=ChannelAccount.Kind.WHATSAPP.value,
        confirmed=confirmed,
        access_token=token,
        name=name.strip(),
        app_secret="",
        verify_token="",
        template_name=template_name,
        template_language=template_language,
    )


_KIND_LABEL = {"whatsapp": "WhatsApp number", "messenger": "Facebook Page", "instagram": "Instagram account"}


def _taken(kind: str) -> ChannelAccountError:
    return ChannelAccountError(
        f"this {_KIND_LABEL[kind]} is already connected to another business; it must be disconnected there first"
    )


def _ensure_free(business: Business, kind: str, confirmed: ownership.Confirmed) -> None:
    routing_field = _REQUIRED[kind][0]
    if (
        ChannelAccount.objects.filter(
            kind=kind, active=True, **{routing_field: getattr(confirmed, routing_field)}
        )
        .exclude(business=business)
        .exists()
    ):
        raise _taken(kind)


def _account_save(
    *,
    business: Business,
    kind: str,
    confirmed: ownership.Confirmed,
    access_token: str,
    name: str,
    app_secret: str,
    verify_token: str,
    template_name: str,
    template_language: str,
) -> ChannelAccount:
    routing_field = _REQUIRED[kind][0]
    with transaction.atomic(durable=True):
        # Tenants' own app secrets are cached for webhook intake: this process reads them afresh.
        transaction.on_commit(meta_selectors.signing_keys_forget)
        existing = (
            ChannelAccount.objects.select_for_update()
            .filter(kind=kind, active=True, **{routing_field: getattr(confirmed, routing_field)})
            .first()
        )
        if existing is not None and existing.business_id != business.pk:
            raise _taken(kind)
        account = existing or ChannelAccount(business=business, kind=kind)
        account.name = name[:100]
        account.waba_id = confirmed.waba_id
        account.phone_number_id = confirmed.phone_number_id
        account.display_phone_number = confirmed.display_phone_number
        account.page_id = confirmed.page_id
        account.instagram_account_id = confirmed.instagram_account_id
        account.access_token = access_token
        account.app_secret = app_secret.strip()
        account.verify_token = verify_token.strip()[:200]
        account.template_name = template_name.strip()[:512]
        account.template_language = (template_language or "en_US").strip()[:16]
        try:
            with transaction.atomic():
                account.save()
        except IntegrityError as exc:
            # The partial unique constraints (one active account per id) decide a race between two tenants.
            raise _taken(kind) from exc
    logger.info("channel account %s connected for business %s (%s)", account.pk, business.pk, kind)
    return account


def channel_account_disconnect(*, business: Business, account_id: int) -> bool:
    """Stop routing and sending through the account; its secrets are erased. False if it is not this
    business's active account."""
    with transaction.atomic(durable=True):
        updated = ChannelAccount.objects.filter(business=business, pk=account_id, active=True).update(
            active=False, access_token="", app_secret="", verify_token="", updated_at=timezone.now()
        )
        transaction.on_commit(meta_selectors.signing_keys_forget)
    return updated == 1


# --- Webhook intake -------------------------------------------------------------------------------------------


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
_redis_local = threading.local()


def _redis() -> redis.Redis:
    client: redis.Redis | None = getattr(_redis_local, "client", None)
    if client is None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _redis_local.client = client
    return client


def _schedule_processing() -> None:
    try:
        if not _redis().set(SCHEDULE_FLAG, "1", nx=True, ex=SCHEDULE_TTL_SECONDS):
            return
    except redis.RedisError:
        logger.warning("webhook processing: Redis unavailable, queueing without coalescing")
    enqueue("messaging.meta.tasks.process_pending")


def processing_schedule_clear() -> None:
    """Called by ``process_pending`` before it reads pending rows (see SCHEDULE_FLAG)."""
    try:
        _redis().delete(SCHEDULE_FLAG)
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


def webhook_delivery_process(*, delivery_id: int) -> dict[str, Any] | None:
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


def _process(delivery: WebhookDelivery) -> tuple[dict[str, Any], int | None]:
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
        summary["status_" + delivery_status_apply(account=account, update=status)] += 1
    for read in parsed.reads:
        account = _route(delivery, read.platform, read.account_id, cache)
        if account is None:
            summary["unrouted"] += 1
            continue
        summary["read_watermark"] += _read_watermark(account, read)
    summary["ignored"] += len(parsed.ignored)
    routed = [account for account in cache.values() if account is not None]
    if routed:
        ChannelAccount.objects.filter(pk__in=[a.pk for a in routed]).update(last_delivery_at=timezone.now())
    return {k: v for k, v in summary.items() if v}, (routed[0].business_id if routed else None)


def _enqueue_send(message_id: int) -> None:
    enqueue("messaging.meta.tasks.send_message", message_id)


def _enqueue_mark_read(account_id: int, contact_id: str, message_id: str) -> None:
    if settings.META_MARK_READ:
        enqueue("messaging.meta.tasks.mark_read", account_id, contact_id, message_id)


def _inbound(account: ChannelAccount, event: parser.InboundMessage) -> str:
    if event.supported:
        message = message_receive(
            business=account.business,
            channel=account.kind,
            contact_external_id=event.sender_id,
            text=event.text,
            channel_message_id=event.message_id,
            contact_name=event.sender_name,
            received_at=event.timestamp,
        )
        if message is None:
            return "duplicate"
        _enqueue_mark_read(account.pk, event.sender_id, event.message_id)
        return "received"
    return _unsupported_receive(account, event)


def _unsupported_receive(account: ChannelAccount, event: parser.InboundMessage) -> str:
    """A message the agent cannot read: stored (for the inbox), answered with a fixed note naming what works
    (not by the model: there is nothing to ground it on). Silent when a person has the conversation."""
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
            return "duplicate"
        Conversation.objects.filter(pk=conversation.pk).filter(
            Q(last_customer_message_at__isnull=True) | Q(last_customer_message_at__lt=event.timestamp)
        ).update(last_customer_message_at=event.timestamp, updated_at=timezone.now())
        if bot:
            note = Message.objects.create(
                business=account.business,
                conversation=conversation,
                channel=account.kind,
                role=Message.Role.AGENT,
                text=outbound.unsupported_reply(event.kind),
                status=Message.Status.DONE,
                reply_to=customer,
                delivery=Message.Delivery.QUEUED,
            )
            transaction.on_commit(lambda: _enqueue_send(note.pk))
    return "unsupported"


# --- Delivery statuses ----------------------------------------------------------------------------------------


def _advance(model: Any, pk: int, new: str) -> bool:
    """Move ``delivery`` forward only: sent < delivered < read; failed is final and beats everything."""
    qs = model.objects.filter(pk=pk).exclude(delivery=Message.Delivery.FAILED)
    if new != Message.Delivery.FAILED:
        qs = qs.filter(delivery__in=[d for d, rank in _RANK.items() if rank < _RANK[new]])
    return bool(qs.update(delivery=new))


def _error_text(code: int | None, title: str) -> str:
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
        _advance(Message, message_id, target)


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
            error = _error_text(update.error_code, update.error_title)
            OutboundPart.objects.filter(pk=part.pk).update(
                delivery=Message.Delivery.FAILED, error=error[:2000]
            )
            if _advance(Message, part.message_id, Message.Delivery.FAILED):
                Message.objects.filter(pk=part.message_id).update(error=error[:2000])
            return "failed"
        if not _advance(OutboundPart, part.pk, status):
            return "stale"
        _message_delivery_recompute(part.message_id)
    return status


def _read_watermark(account: ChannelAccount, read: parser.ReadWatermark) -> int:
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
            _advance(OutboundPart, pk, Message.Delivery.READ)
        for message_id in {m for _, m in parts}:
            _message_delivery_recompute(message_id)
    return len(parts)


# --- Sending ---------------------------------------------------------------------------------------------------


def _fail(message_id: int, error: str) -> None:
    Message.objects.filter(pk=message_id).exclude(delivery=Message.Delivery.FAILED).update(
        delivery=Message.Delivery.FAILED, error=error[:2000]
    )


def _send_node(account: ChannelAccount) -> str:
    if account.kind == ChannelAccount.Kind.WHATSAPP:
        return account.phone_number_id
    if account.kind == ChannelAccount.Kind.MESSENGER:
        return account.page_id
    # Instagram through a Facebook-Login page token sends from the page; Instagram Login from the account.
    return account.page_id or account.instagram_account_id


def _plan(
    message: Message, account: ChannelAccount, now: dt.datetime
) -> tuple[list[dict[str, Any]], str] | str:
    """The request bodies for this message and a note for ``error``, or why nothing may be sent."""
    conversation = message.conversation
    contact_id = conversation.contact.external_id
    last = conversation.last_customer_message_at
    since = now - last if last else None
    kind = account.kind
    if since is not None and since < WINDOW:
        contents = outbound.message_parts(kind, message.text, message.cards)
        return [outbound.request_body(kind, contact_id, c) for c in contents], ""
    if kind == ChannelAccount.Kind.WHATSAPP:
        if not account.template_name:
            return "window closed: no template configured, not sent"
        body = outbound.request_body(
            kind, contact_id, outbound.whatsapp_template(account.template_name, account.template_language)
        )
        return [body], f"window closed: sent template {account.template_name}"
    if message.role == Message.Role.STAFF and since is not None and since < HUMAN_AGENT_WINDOW:
        contents = outbound.message_parts(kind, message.text, message.cards)
        return [outbound.request_body(kind, contact_id, c, tag="HUMAN_AGENT") for c in contents], ""
    return "window closed: not sent"


def _claim_part(part_id: int, now: dt.datetime) -> bool:
    return (
        OutboundPart.objects.filter(pk=part_id, state=OutboundPart.State.SENDING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE))
        .update(claimed_at=now)
        == 1
    )


def message_send(*, message_id: int) -> str:
    """Send an agent or staff message to the customer on its channel, part by part, each part once.

    Returns what happened: ``sent``, ``gone``, ``skipped`` (nothing to send, not outbound, already final),
    ``busy`` (another worker is sending it), ``failed`` or a ``window closed`` reason. Raises
    ``graph.TransientGraphError`` when Meta kept answering 429/5xx: run again later, sent parts are kept.
    """
    message = (
        Message.objects.select_related("conversation__contact", "business").filter(pk=message_id).first()
    )
    if message is None:
        return "gone"
    if message.role == Message.Role.CUSTOMER or message.channel not in _REQUIRED:
        return "skipped"
    if message.delivery in (Message.Delivery.SENT, Message.Delivery.DELIVERED, Message.Delivery.READ):
        return "skipped"
    if message.delivery == Message.Delivery.FAILED:
        return "skipped"
    if not message.text.strip() and not message.cards:
        return "skipped"
    account = meta_selectors.channel_account_for_sending(message.business, message.channel)
    if account is None or not account.access_token:
        _fail(message.pk, f"no connected {message.channel} account")
        return "failed"
    now = timezone.now()
    parts = list(OutboundPart.objects.filter(message=message).order_by("index"))
    note = ""
    if not parts:
        # The first plan is kept: a redelivered task must not re-plan (the window may have closed since).
        plan = _plan(message, account, now)
        if isinstance(plan, str):
            _fail(message.pk, plan)
            return plan
        bodies, note = plan
        with transaction.atomic(durable=True):
            for index, body in enumerate(bodies):
                OutboundPart.objects.get_or_create(
                    message=message,
                    index=index,
                    defaults={"business": message.business, "channel": message.channel, "body": body},
                )
        parts = list(OutboundPart.objects.filter(message=message).order_by("index"))
    node = _send_node(account)
    position = 0
    while position < len(parts):
        part = parts[position]
        position += 1
        if part.state == OutboundPart.State.SENT:
            continue
        if part.state == OutboundPart.State.FAILED:
            continue
        if not _claim_part(part.pk, now):
            return "busy"
        try:
            result = graph.post(node, part.body, token=account.access_token)
        except graph.TransientGraphError:
            OutboundPart.objects.filter(pk=part.pk).update(claimed_at=None)
            raise
        if result.ok:
            OutboundPart.objects.filter(pk=part.pk).update(
                state=OutboundPart.State.SENT,
                channel_message_id=result.message_id,
                delivery=Message.Delivery.SENT,
                sent_at=timezone.now(),
            )
            continue
        error = _error_text(result.error_code, result.error_message) or f"HTTP {result.status}"
        OutboundPart.objects.filter(pk=part.pk).update(state=OutboundPart.State.FAILED, error=error[:2000])
        if (
            result.window_closed
            and account.kind == ChannelAccount.Kind.WHATSAPP
            and account.template_name
            and part.body.get("type") != "template"
        ):
            # Meta says the window is closed (our clock or the known issue disagreed): the rest of the
            # message becomes one template.
            with transaction.atomic(durable=True):
                OutboundPart.objects.filter(message=message, state=OutboundPart.State.SENDING).update(
                    state=OutboundPart.State.FAILED, error="window closed (131047)"
                )
                template = OutboundPart.objects.create(
                    business=message.business,
                    message=message,
                    channel=message.channel,
                    index=parts[-1].index + 1,
                    body=outbound.request_body(
                        account.kind,
                        message.conversation.contact.external_id,
                        outbound.whatsapp_template(account.template_name, account.template_language),
                    ),
                )
            parts, position = [template], 0
            note = f"window closed (131047): sent template {account.template_name}"
            continue
        _fail(message.pk, error)
        return "window closed" if result.window_closed else "failed"
    sent = OutboundPart.objects.filter(message=message, state=OutboundPart.State.SENT).order_by("index")
    first = sent.values_list("channel_message_id", flat=True).first()
    if first is None:
        _fail(message.pk, "nothing was sent")
        return "failed"
    with transaction.atomic(durable=True):
        _advance(Message, message.pk, Message.Delivery.SENT)
        fields: dict[str, Any] = {"error": note[:2000]}
        if not message.channel_message_id and first:
            fields["channel_message_id"] = first
        try:
            with transaction.atomic():
                Message.objects.filter(pk=message.pk).update(**fields)
        except IntegrityError:
            Message.objects.filter(pk=message.pk).update(error=note[:2000])
    return "sent"


def message_send_give_up(*, message_id: int, error: str) -> None:
    """The send task ran out of retries: the message is failed with the last error."""
    _fail(message_id, f"not sent: {error}")


def mark_read_send(*, account_id: int, contact_id: str, message_id: str) -> bool:
    """Read receipt + typing indicator for an inbound message. Best effort: failures are only logged."""
    account = ChannelAccount.objects.filter(pk=account_id, active=True).first()
    if account is None or not account.access_token:
        return False
    ok = True
    for body in outbound.mark_read_bodies(account.kind, contact_id, message_id):
        try:
            result = graph.post(_send_node(account), body, token=account.access_token)
        except graph.TransientGraphError as exc:
            logger.info("mark read on account %s: %s", account_id, exc)
            return False
        ok = ok and result.ok
        if not result.ok:
            logger.info("mark read on account %s: %s %s", account_id, result.error_code, result.error_message)
    return ok
