"""Writes for sending: an agent or staff message goes to the customer through the Graph API, split at the
channel's limit (``outbound``), one recorded part per send; read receipts and typing indicators.

Graph API calls happen outside transactions (read, commit, call, then write in a short transaction).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.utils import timezone

from common import metrics
from common.tasks import enqueue
from messaging.meta import graph, outbound, rating
from messaging.meta import selectors as meta_selectors
from messaging.meta.statuses import delivery_advance, error_text
from messaging.models import ChannelAccount, Message, OutboundPart
from messaging.replies.claim import claimer_gone, worker_id

logger = logging.getLogger(__name__)

# Why a message whose 24-hour window has closed is not sent (``_plan``).
WindowClosed = Literal["window closed: no template configured, not sent", "window closed: not sent"]
# What became of a send (``message_send``).
SendOutcome = (
    Literal["sent", "gone", "skipped", "busy", "ambiguous", "failed", "window closed"] | WindowClosed
)

WINDOW = dt.timedelta(hours=24)
HUMAN_AGENT_WINDOW = dt.timedelta(days=7)
# A part claimed longer ago than this belongs to a dead worker; it may have been sent before the worker died,
# so it is reported ambiguous, never sent again.
CLAIM_LEASE = dt.timedelta(minutes=5)
# Deliveries after which a message is not sent (again).
_FINAL = (
    Message.Delivery.SENT,
    Message.Delivery.DELIVERED,
    Message.Delivery.READ,
    Message.Delivery.FAILED,
    Message.Delivery.AMBIGUOUS,
)


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
) -> tuple[list[dict[str, Any]], str] | WindowClosed:
    """The request bodies for this message and a note for ``error``, or why nothing may be sent."""
    conversation = message.conversation
    contact_id = conversation.contact.external_id
    last = conversation.last_customer_message_at
    since = now - last if last else None
    kind = account.kind
    if message.asks_rating:
        # A survey, not an answer: only inside the customer-service window (no template, no HUMAN_AGENT tag).
        if since is None or since >= WINDOW:
            return "window closed: not sent"
        content = rating.rating_content(kind, conversation.pk, message.text)
        return [outbound.request_body(kind, contact_id, content)], ""
    if since is not None and since < WINDOW:
        contents = outbound.message_parts(
            kind,
            message.text,
            message.cards,
            disclosure=message.disclosure,
            catalog_id=account.commerce_catalog_id,
            # The product buttons speak the language of the question the reply answers.
            language_hint=message.reply_to.text if message.reply_to else "",
        )
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
    """pending -> sending, committed before the request: from here on the part may be on the wire."""
    return (
        OutboundPart.objects.filter(pk=part_id, state=OutboundPart.State.PENDING).update(
            state=OutboundPart.State.SENDING, claimed_at=now, claimed_by=worker_id()[:100]
        )
        == 1
    )


def _abandoned(part: OutboundPart, now: dt.datetime) -> bool:
    """A part claimed (``sending``) by a worker that died: its lease ran out, or its process on this host is
    gone (a SIGKILLed worker: known at once)."""
    if part.state != OutboundPart.State.SENDING or part.claimed_at is None:
        return False
    return part.claimed_at < now - CLAIM_LEASE or claimer_gone(part.claimed_by)


def _ambiguous(message: Message, part: OutboundPart, total: int, reason: str) -> Literal["ambiguous"]:
    """Record a part whose outcome is unknown (and its message) and report it; the rest is not sent."""
    error = (
        f"unconfirmed: part {part.index + 1} of {total} may have reached the customer ({reason}); not resent"
    )
    with transaction.atomic(durable=True):
        OutboundPart.objects.filter(pk=part.pk).update(state=OutboundPart.State.AMBIGUOUS, error=error[:2000])
        OutboundPart.objects.filter(message=message, state=OutboundPart.State.PENDING).update(
            state=OutboundPart.State.FAILED, error="not sent: an earlier part is unconfirmed"
        )
        Message.objects.filter(pk=message.pk).exclude(delivery=Message.Delivery.FAILED).update(
            delivery=Message.Delivery.AMBIGUOUS, error=error[:2000]
        )
    logger.warning(
        "outbound send unconfirmed: message %s part %s on %s (business %s): %s",
        message.pk,
        part.index,
        message.channel,
        message.business_id,
        reason,
        extra={"event": "outbound_send_ambiguous", "message_id": message.pk, "part_id": part.pk},
    )
    return "ambiguous"


def message_send(*, message_id: int) -> SendOutcome:
    """Send an agent or staff message to the customer on its channel, part by part, each part once.

    Each part is recorded (``pending``) and claimed (``sending``) before its request goes out. A part that
    may have reached Meta without our knowing (a read timeout or a dropped connection after the request was
    written, or a claim whose worker died) is never sent again: it becomes ``ambiguous``, the message's
    delivery ``ambiguous`` ("Unconfirmed" in the inbox) with the reason in ``error``, and the parts after it
    are not sent.

    Returns what happened: ``sent``, ``gone``, ``skipped`` (nothing to send, not outbound, already final),
    ``busy`` (another worker is sending it), ``ambiguous``, ``failed`` or a ``window closed`` reason. Raises
    ``graph.TransientGraphError`` when Meta kept answering 429/5xx or could not be reached: run again later,
    sent parts are kept.
    """
    message = (
        Message.objects.select_related("conversation__contact", "business", "reply_to")
        .filter(pk=message_id)
        .first()
    )
    if message is None:
        return "gone"
    if message.role == Message.Role.CUSTOMER or message.channel not in ChannelAccount.Kind.values:
        return "skipped"
    if message.delivery in _FINAL:
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
        if part.state in (OutboundPart.State.SENT, OutboundPart.State.FAILED):
            continue
        if part.state == OutboundPart.State.AMBIGUOUS:
            return _ambiguous(message, part, len(parts), part.error or "recorded before")
        if not _claim_part(part.pk, now):
            held = OutboundPart.objects.filter(pk=part.pk).first()
            if held is not None and _abandoned(held, now):
                return _ambiguous(message, part, len(parts), "the worker sending it stopped")
            return "busy"
        try:
            result = graph.send(node, part.body, token=account.access_token)
        except graph.TransientGraphError:
            metrics.SENDS.labels(message.channel, "transient").inc()
            # Every try failed before Meta took it (429, 5xx, not reachable): the part may go again.
            OutboundPart.objects.filter(pk=part.pk).update(state=OutboundPart.State.PENDING, claimed_at=None)
            raise
        except graph.AmbiguousGraphError as exc:
            metrics.SENDS.labels(message.channel, "ambiguous").inc()
            return _ambiguous(message, part, len(parts), str(exc))
        metrics.SENDS.labels(message.channel, "sent" if result.ok else "refused").inc()
        if result.ok:
            OutboundPart.objects.filter(pk=part.pk).update(
                state=OutboundPart.State.SENT,
                channel_message_id=result.message_id,
                delivery=Message.Delivery.SENT,
                sent_at=timezone.now(),
            )
            continue
        error = error_text(result.error_code, result.error_message) or f"HTTP {result.status}"
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
                OutboundPart.objects.filter(message=message, state=OutboundPart.State.PENDING).update(
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
        delivery_advance(Message, message.pk, Message.Delivery.SENT)
        fields: dict[str, Any] = {"error": note[:2000]}
        if not message.channel_message_id and first:
            fields["channel_message_id"] = first
        try:
            with transaction.atomic():
                Message.objects.filter(pk=message.pk).update(**fields)
        except IntegrityError:
            Message.objects.filter(pk=message.pk).update(error=note[:2000])
    return "sent"


# A queued send untouched this long (its message finished, or last swept) whose task may be lost: the worker
# that held it died (an unacknowledged task comes back only after the broker's visibility timeout), or its
# publish failed. Above a send's usual wait in the outbound queue.
SEND_GRACE = dt.timedelta(seconds=15)
SWEEP_LIMIT = 500


def sends_sweep(*, now: dt.datetime | None = None) -> list[int]:
    """Queue ``send_message`` again for outgoing messages still ``queued`` past ``SEND_GRACE`` whose send is
    not under way: no part recorded yet (the task never ran), or a part claimed by a worker that died (the run
    that follows reports it ambiguous, never resends it). A part waiting for a retry is left to its task.
    Each message is queued once per ``SEND_GRACE`` (the conditional update of ``updated_at`` is the sweep's
    claim); ``message_send`` is safe to run twice. Returns the message ids."""
    now = now or timezone.now()
    cutoff = now - SEND_GRACE
    queued = Message.objects.filter(
        role__in=[Message.Role.AGENT, Message.Role.STAFF],
        channel__in=ChannelAccount.Kind.values,
        delivery=Message.Delivery.QUEUED,
        updated_at__lt=cutoff,
    )
    due: list[int] = []
    claimed_parts: dict[int, list[OutboundPart]] = {}
    candidates = list(queued.order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT])
    for part in OutboundPart.objects.filter(message_id__in=candidates).order_by("index"):
        claimed_parts.setdefault(part.message_id, []).append(part)
    for message_id in candidates:
        parts = claimed_parts.get(message_id, [])
        if not parts or any(_abandoned(part, now) for part in parts):
            due.append(message_id)
    swept = []
    for message_id in due:
        # auto_now does not apply to update(): updated_at is set here, as the sweep's mark.
        if Message.objects.filter(
            pk=message_id, delivery=Message.Delivery.QUEUED, updated_at__lt=cutoff
        ).update(updated_at=now):
            enqueue("messaging.meta.tasks.send_message", message_id)
            swept.append(message_id)
    if swept:
        logger.warning(
            "outbound sends queued again: %s", swept, extra={"event": "outbound_send_requeued", "ids": swept}
        )
    return swept


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
