"""Reading the photos and voice notes customers send (docs/channels.md, "Photos and voice notes").

1. ``media_message_receive`` stores the customer's message as ``preparing``, with a ``MessageMedia`` row saying
   where its bytes are (a WhatsApp media id, a Messenger/Instagram attachment URL, or the widget's upload, kept
   at once), and queues ``messaging.tasks.read_media`` on commit. Nothing slow runs in the webhook's processing.
2. ``media_read`` (that task, on the ``replies`` queue) claims the row, downloads the bytes (messaging.meta.media),
   checks them (messaging.media), and asks the pool to read them: a photo is described by an endpoint that
   accepts images, a voice note transcribed by an endpoint of kind ``audio``. The message then becomes the
   question the agent answers (``received``), or, when nothing could read it, gets a fixed reply in the
   customer's language.
3. While a conversation has a message being read, its reply waits (messaging.replies.claim: ``waiting``); when the
   last one is settled, the reply to the conversation's newest question is queued, so that a burst of messages
   with media ("do you have this?" + a photo + "in blue?") is answered once, after every part is ready.
4. ``media_sweep`` (the reply sweeper's beat) queues the reading again of media whose task was lost or whose
   worker died, and settles as unread any still pending after ``GIVE_UP_AFTER``, so a reply never waits for
   ever.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from businesses.models import Business
from common import aio
from common.tasks import enqueue_on_commit
from inference.chat import complete_chat
from inference.endpoints import apool_accepts_images, apool_transcribes
from inference.transcriptions import transcribe
from inference.types import ChatRequest, InferenceError
from messaging import media, outbox_events
from messaging.meta.media import inbound_media
from messaging.models import ChannelAccount, Conversation, Message, MessageMedia
from messaging.replies import policy
from messaging.selectors import last_customer_text
from messaging.services import (
    conversation_customer_wrote,
    conversation_open,
    fixed_reply_send,
    reply_enqueue,
)

logger = logging.getLogger(__name__)

# A claim older than this belongs to a dead worker (a reading is bounded by the pool's queue and reply timeouts).
CLAIM_LEASE = dt.timedelta(minutes=5)
# A reading task not started this long after its message came was lost: the sweeper queues it again.
QUEUED_GRACE = dt.timedelta(seconds=30)
# Media still pending this long after it came is settled as unread: the customer is asked to type instead.
GIVE_UP_AFTER = dt.timedelta(minutes=10)

DESCRIBE_MAX_TOKENS = 80
DESCRIBE_PROMPT = (
    "You help a shop find products. Describe the product in the customer's photo in one short sentence: what "
    "it is, its colour and material, and any brand or text printed on it. No preamble."
)


def media_message_receive(
    *,
    business: Business,
    channel: str,
    contact_external_id: str,
    kind: str,
    caption: str = "",
    channel_message_id: str = "",
    client_message_id: str = "",
    contact_name: str = "",
    received_at: dt.datetime | None = None,
    source: str = "",
    account: ChannelAccount | None = None,
    upload: media.MediaFile | None = None,
    preview: bool = False,
) -> Message | None:
    """Store a customer's photo or voice note as a message being read, and queue its reading on commit.

    ``source`` and ``account``: where a messaging channel's bytes are downloaded from, and with whose token;
    ``upload``: bytes already here and checked (the widget's upload). Idempotent like ``message_receive``: a
    message whose ``channel_message_id`` or ``client_message_id`` is stored already returns None (a redelivery
    is not downloaded again)."""
    received_at = received_at or timezone.now()
    with transaction.atomic(durable=True):
        conversation = conversation_open(
            business=business,
            channel=channel,
            contact_external_id=contact_external_id,
            contact_name=contact_name,
            preview=preview,
        )
        message = Message(
            business=business,
            conversation=conversation,
            channel=channel,
            role=Message.Role.CUSTOMER,
            text=caption or f"[{kind}]",
            status=Message.Status.PREPARING,
            channel_message_id=channel_message_id,
            client_message_id=client_message_id,
        )
        try:
            with transaction.atomic():  # a savepoint: a duplicate must not undo the conversation just opened
                message.save(force_insert=True)
        except IntegrityError:
            return None
        row = MessageMedia(
            business=business,
            message=message,
            kind=kind,
            state=MessageMedia.State.PENDING,
            source=source,
            account=account,
            caption=caption,
        )
        if upload is not None:
            _keep(row, upload)
        row.save(force_insert=True)
        outbox_events.message_created(message)
        conversation_customer_wrote(conversation_id=conversation.pk, at=received_at)
        enqueue_on_commit("messaging.tasks.read_media", row.pk)
    return message


def _keep(row: MessageMedia, file: media.MediaFile) -> None:
    """Put the bytes in storage under the business's folder (saved with the row)."""
    row.content_type, row.size = file.content_type, len(file.data)
    row.file.save(
        f"{uuid.uuid4().hex}.{media.EXTENSIONS[file.content_type]}", ContentFile(file.data), save=False
    )


def media_read(*, media_id: int) -> str | None:
    """Read one photo or voice note and settle its message (module docstring, point 2). Returns the media's
    state, or None when another worker holds it or it is settled already. Safe to run twice. Raises
    MediaUnavailable when the platform failed for now (the claim is released for the task's next try)."""
    now = timezone.now()
    claimed = (
        MessageMedia.objects.filter(pk=media_id, state=MessageMedia.State.PENDING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE))
        .update(claimed_at=now)
    )
    if not claimed:
        return None
    row = MessageMedia.objects.select_related("message", "account").get(pk=media_id)
    try:
        file = _bytes_of(row)
    except media.MediaRefused as exc:
        logger.info("media %s (message %s) refused: %s", row.pk, row.message_id, exc)
        return _settle(row, MessageMedia.State.REFUSED, error=str(exc))
    except media.MediaUnavailable:
        MessageMedia.objects.filter(pk=media_id, claimed_at=now).update(claimed_at=None)
        raise
    if not row.file:
        _keep(row, file)
    reading, error = aio.run(_read(row.business_id, file, row.caption))
    state = MessageMedia.State.READ if reading else MessageMedia.State.UNREAD
    return _settle(row, state, reading=reading, error=error)


def _bytes_of(row: MessageMedia) -> media.MediaFile:
    if row.file:  # uploaded (the widget), or downloaded by an earlier try that died before settling
        with row.file.open("rb") as handle:
            return media.media_of(row.kind, handle.read())
    if row.account is None:
        raise media.MediaRefused("no account to download it with (disconnected)")
    return inbound_media(row.account, row.kind, row.source)


async def _read(business_id: int, file: media.MediaFile, caption: str) -> tuple[str, str]:
    """What the pool read in it (a description, a transcript), and why not ("" when it did)."""
    try:
        if file.kind == media.AUDIO:
            if not await apool_transcribes():
                return "", "no endpoint transcribes voice notes (kind=audio)"
            return await transcribe(
                business_id=business_id,
                audio=file.data,
                content_type=file.content_type,
                filename=file.filename,
            ), ""
        if not await apool_accepts_images():
            return "", "no endpoint accepts images"
        return await _describe(business_id, file, caption), ""
    except InferenceError as exc:
        logger.warning("reading %s for business %s failed: %s", file.kind, business_id, exc)
        return "", str(exc)[:300]


async def _describe(business_id: int, photo: media.MediaFile, caption: str) -> str:
    data_url = f"data:{photo.content_type};base64,{base64.b64encode(photo.data).decode('ascii')}"
    request = ChatRequest(
        business_id=business_id,
        messages=[
            {"role": "system", "content": DESCRIBE_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": caption or "What is this?"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            },
        ],
        max_tokens=DESCRIBE_MAX_TOKENS,
        temperature=0.0,
        images=True,
    )
    result = await complete_chat(request)
    return " ".join(result.text.split())


def _settle(row: MessageMedia, state: str, *, reading: str = "", error: str = "") -> str | None:
    """Record what became of the media and settle its message: a question for the agent (read, or a caption to
    answer), else a fixed reply. Then, when no other message of the conversation is being read, queue the reply
    to its newest question. One transaction under the conversation's row lock, so that of two media settled at
    once the second sees the first, and the reply is queued once."""
    message = row.message
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
        if not MessageMedia.objects.filter(pk=row.pk, state=MessageMedia.State.PENDING).update(
            state=state,
            description=reading,
            error=error[:300],
            file=row.file.name or "",
            content_type=row.content_type,
            size=row.size,
        ):
            return None  # settled by another (the sweeper gave up on it)
        caption = row.caption
        answerable = state == MessageMedia.State.READ or (caption and state == MessageMedia.State.UNREAD)
        bot = conversation.state == Conversation.State.BOT
        if answerable:
            text = media.question_of(row.kind, caption, reading) if reading else caption
            status = Message.Status.RECEIVED if bot else Message.Status.SKIPPED
        else:
            text, status = message.text, (Message.Status.ANSWERED if bot else Message.Status.SKIPPED)
        settled = Message.objects.filter(pk=message.pk, status=Message.Status.PREPARING).update(
            text=text, status=status, reply_due_at=policy.reply_due_at(timezone.now(), 0.0)
        )
        if settled and bot and not answerable:
            message.text = text
            # The customer's own words: the caption, else their last message before it.
            hint = caption or last_customer_text(message.conversation_id, before=message.pk)
            note = media.fixed_reply(row.kind, state, hint)
            fixed_reply_send(conversation=conversation, customer=message, text=note, language_hint=hint)
        if bot:
            _queue_waiting_reply(conversation)
    return state


def _queue_waiting_reply(conversation: Conversation) -> None:
    """Queue the reply to the conversation's newest question once none of its messages is being read."""
    customers = Message.objects.filter(conversation=conversation, role=Message.Role.CUSTOMER)
    if customers.filter(status=Message.Status.PREPARING).exists():
        return
    newest = customers.filter(status=Message.Status.RECEIVED).order_by("-pk").first()
    if newest is not None:
        reply_enqueue(message=newest)


def media_sweep(*, now: dt.datetime | None = None) -> tuple[int, int]:
    """Queue again the reading of pending media whose task was lost (never claimed ``QUEUED_GRACE`` after it
    came) or whose worker died (claim older than ``CLAIM_LEASE``); settle as unread what is still pending
    ``GIVE_UP_AFTER`` after it came. Returns (queued again, given up)."""
    now = now or timezone.now()
    pending = MessageMedia.objects.filter(state=MessageMedia.State.PENDING)
    given_up = 0
    for row in pending.filter(created_at__lt=now - GIVE_UP_AFTER).select_related("message"):
        if _settle(row, MessageMedia.State.UNREAD, error="not read in time") is not None:
            given_up += 1
    lost = pending.filter(created_at__lt=now - QUEUED_GRACE).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE)
    )
    ids = list(lost.values_list("pk", flat=True)[:500])
    for media_id in ids:
        enqueue_on_commit("messaging.tasks.read_media", media_id)
    if ids or given_up:
        logger.warning("media sweep: %d readings queued again, %d given up", len(ids), given_up)
    return len(ids), given_up
