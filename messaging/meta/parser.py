"""Meta webhook payloads -> typed events. Pure functions: no database, no network.

Every level is an array (entries, changes, messages, statuses, messaging) and is iterated in full; a level
of the wrong shape is skipped, never fatal: Meta adds fields and types over time, and one odd event must not
lose the rest of the batch. Sources: ../shared/PROTOCOLS.md sections 1 and 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

WHATSAPP = "whatsapp"
MESSENGER = "messenger"
INSTAGRAM = "instagram"

OBJECT_PLATFORM = {"whatsapp_business_account": WHATSAPP, "page": MESSENGER, "instagram": INSTAGRAM}

# Message kinds the agent answers; everything else gets the polite "what works" reply.
SUPPORTED = (
    "text",
    "interactive",
    "button",
    "location",
    "image",
    "audio",
    "postback",
    "quick_reply",
    "order",
)


@dataclass(frozen=True)
class OrderLine:
    """One line of a WhatsApp cart, as the customer's app saw it (prices may be stale)."""

    product_retailer_id: str
    quantity: int
    item_price: Decimal | None
    currency: str


@dataclass(frozen=True)
class InboundOrder:
    """A WhatsApp ``order`` message: a cart sent from a catalog."""

    catalog_id: str
    text: str
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True)
class InboundMessage:
    platform: str
    account_id: str  # phone_number_id (WhatsApp), page id (Messenger), Instagram account id
    sender_id: str  # the reply address: WhatsApp `from`, else the BSUID; PSID; IGSID
    sender_name: str
    message_id: str  # wamid / mid: the de-duplication key
    timestamp: dt.datetime
    kind: str  # text, interactive, button, location, image, postback, ... or the unknown type's name
    text: str  # what the agent reads ("" for kinds it cannot read)
    supported: bool
    sender_user_id: str = ""  # WhatsApp business-scoped user id (BSUID), when present
    # What a tapped button or list row carries: a Messenger/Instagram postback's payload, a WhatsApp
    # interactive reply's id (``item:<id>`` for our product buttons: messaging.meta.products).
    payload: str = ""
    order: InboundOrder | None = None  # a WhatsApp cart
    # A photo or voice note (``media_kind`` image or audio): WhatsApp's media id (downloaded through Graph with
    # the account's token), or a Messenger or Instagram attachment URL (downloaded through common.safe_fetch).
    # See messaging.meta.media.
    media_kind: str = ""
    media_id: str = ""
    media_url: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    platform: str
    account_id: str
    message_id: str  # the id of OUR sent message (part)
    status: str  # sent, delivered, read, failed
    timestamp: dt.datetime
    error_code: int | None = None
    error_title: str = ""


@dataclass(frozen=True)
class ReadWatermark:
    """Messenger `read`: every message the page sent to this user before the watermark has been read."""

    platform: str
    account_id: str
    user_id: str
    watermark: dt.datetime


@dataclass
class ParsedDelivery:
    platform: str
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    reads: list[ReadWatermark] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # why events were skipped (echo, reaction, ...)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _time(value: Any, *, millis: bool) -> dt.datetime:
    """WhatsApp sends Unix seconds as a string; Messenger and Instagram send milliseconds as a number."""
    try:
        seconds = float(value) / (1000.0 if millis else 1.0)
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return dt.datetime.now(tz=dt.UTC)


def parse(payload: Any, *, platform: str = "") -> ParsedDelivery:
    """Parse one delivery. ``platform`` is the endpoint's; the body's ``object`` decides when it is known."""
    body = _dict(payload)
    platform = OBJECT_PLATFORM.get(_str(body.get("object")), platform)
    result = ParsedDelivery(platform=platform)
    for entry in _list(body.get("entry")):
        entry = _dict(entry)
        if platform == WHATSAPP:
            for change in _list(entry.get("changes")):
                _whatsapp_change(_dict(change), result)
        elif platform in (MESSENGER, INSTAGRAM):
            for event in _list(entry.get("messaging")):
                _messaging_event(platform, _str(entry.get("id")), _dict(event), result)
            for change in _list(entry.get("changes")):
                result.ignored.append(f"{platform} change {_str(_dict(change).get('field')) or '?'}")
        else:
            result.ignored.append(f"object {_str(body.get('object')) or '?'}")
    return result


# --- WhatsApp Cloud API -----------------------------------------------------------------------------------


def _whatsapp_change(change: dict[str, Any], result: ParsedDelivery) -> None:
    value = _dict(change.get("value"))
    if _str(change.get("field")) not in ("messages", ""):
        result.ignored.append(f"whatsapp field {_str(change.get('field'))}")
        return
    account_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
    names: dict[str, str] = {}
    for contact in _list(value.get("contacts")):
        contact = _dict(contact)
        name = _str(_dict(contact.get("profile")).get("name"))
        for key in (_str(contact.get("wa_id")), _str(contact.get("user_id"))):
            if key:
                names[key] = name
    for message in _list(value.get("messages")):
        parsed = _whatsapp_message(account_id, _dict(message), names)
        if parsed is None:
            result.ignored.append(f"whatsapp message {_str(_dict(message).get('type')) or '?'}")
        else:
            result.messages.append(parsed)
    for status in _list(value.get("statuses")):
        status = _dict(status)
        errors = [_dict(e) for e in _list(status.get("errors"))]
        code = errors[0].get("code") if errors else None
        message_id = _str(status.get("id"))
        if not message_id or not _str(status.get("status")):
            continue
        result.statuses.append(
            StatusUpdate(
                platform=WHATSAPP,
                account_id=account_id,
                message_id=message_id,
                status=_str(status.get("status")),
                timestamp=_time(status.get("timestamp"), millis=False),
                error_code=code if isinstance(code, int) else None,
                error_title=_str(errors[0].get("title") or errors[0].get("message")) if errors else "",
            )
        )


def _whatsapp_text(kind: str, message: dict[str, Any]) -> str:
    if kind == "text":
        return _str(_dict(message.get("text")).get("body"))
    if kind == "interactive":
        interactive = _dict(message.get("interactive"))
        reply = _dict(interactive.get(_str(interactive.get("type"))))
        # The title is what the customer saw and tapped; the description adds the row's detail.
        return " - ".join(part for part in (_str(reply.get("title")), _str(reply.get("description"))) if part)
    if kind == "button":
        button = _dict(message.get("button"))
        return _str(button.get("text")) or _str(button.get("payload"))
    if kind == "location":
        return _location_text(_dict(message.get("location")))
    if kind == "image":
        return _str(_dict(message.get("image")).get("caption"))
    return ""


def _location_text(location: dict[str, Any]) -> str:
    place = ", ".join(p for p in (_str(location.get("name")), _str(location.get("address"))) if p)
    lat, lon = location.get("latitude"), location.get("longitude")
    coords = f"{lat}, {lon}" if lat is not None and lon is not None else ""
    if place and coords:
        return f"My location: {place} ({coords})"
    return f"My location: {place or coords}" if place or coords else ""


def _whatsapp_message(
    account_id: str, message: dict[str, Any], names: dict[str, str]
) -> InboundMessage | None:
    message_id = _str(message.get("id"))
    phone = _str(message.get("from"))
    bsuid = _str(message.get("from_user_id"))
    # The user key is `from` when present, else the business-scoped user id (BSUID rollout, 2026).
    sender = phone or bsuid
    kind = _str(message.get("type")) or "unknown"
    if not message_id or not sender:
        return None
    if kind in ("reaction", "system", "errors"):
        # Reactions and system notices are not questions: answering them would be noise.
        return None
    text = _whatsapp_text(kind, message).strip()
    order = _whatsapp_order(_dict(message.get("order"))) if kind == "order" else None
    # A voice note is type audio (with ``voice: true``), as is an audio file: both are transcribed.
    media_id = _str(_dict(message.get(kind)).get("id")) if kind in ("image", "audio") else ""
    supported = kind in SUPPORTED and (bool(text) or order is not None or bool(media_id))
    return InboundMessage(
        platform=WHATSAPP,
        account_id=account_id,
        sender_id=sender,
        sender_name=names.get(phone) or names.get(bsuid) or "",
        message_id=message_id,
        timestamp=_time(message.get("timestamp"), millis=False),
        kind=kind,
        text=text,
        supported=supported,
        sender_user_id=bsuid,
        payload=_whatsapp_payload(kind, message),
        order=order,
        media_kind=kind if media_id else "",
        media_id=media_id,
    )


def _whatsapp_payload(kind: str, message: dict[str, Any]) -> str:
    if kind == "interactive":
        interactive = _dict(message.get("interactive"))
        return _str(_dict(interactive.get(_str(interactive.get("type")))).get("id"))
    if kind == "button":
        return _str(_dict(message.get("button")).get("payload"))
    return ""


def _quantity(value: Any) -> int:
    try:
        quantity = int(str(value))
    except ValueError:
        return 0
    return quantity


def _price(value: Any) -> Decimal | None:
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def _whatsapp_order(order: dict[str, Any]) -> InboundOrder | None:
    """The cart, or None when it has no line we can read (then answered as an unreadable message). A line
    without a retailer id or with a quantity under 1 is dropped; quantities and prices come as numbers or
    strings."""
    lines = []
    for item in _list(order.get("product_items")):
        item = _dict(item)
        retailer_id, quantity = _str(item.get("product_retailer_id")).strip(), _quantity(item.get("quantity"))
        if retailer_id and quantity > 0:
            lines.append(
                OrderLine(
                    product_retailer_id=retailer_id[:200],
                    quantity=quantity,
                    item_price=_price(item.get("item_price")),
                    currency=_str(item.get("currency")).strip().upper()[:3],
                )
            )
    if not lines:
        return None
    return InboundOrder(
        catalog_id=_str(order.get("catalog_id")), text=_str(order.get("text")), lines=tuple(lines)
    )


# --- Messenger and Instagram ----------------------------------------------------------------------------------


def _messaging_event(platform: str, entry_id: str, event: dict[str, Any], result: ParsedDelivery) -> None:
    sender = _str(_dict(event.get("sender")).get("id"))
    recipient = _str(_dict(event.get("recipient")).get("id"))
    # Our account is the recipient of a customer's message; entry.id names it too.
    account_id = entry_id or recipient
    when = _time(event.get("timestamp"), millis=True)
    message = event.get("message")
    if isinstance(message, dict):
        if message.get("is_echo") or (sender and sender == account_id):
            # Our own sends come back as echoes (always on Instagram): answering them would loop.
            result.ignored.append(f"{platform} echo")
            return
        if message.get("is_deleted"):
            result.ignored.append(f"{platform} deleted")
            return
        mid = _str(message.get("mid"))
        if not mid or not sender:
            result.ignored.append(f"{platform} message without id")
            return
        text = _str(message.get("text")).strip()
        kind = "text"
        attachments = [_dict(a) for a in _list(message.get("attachments"))]
        if not text and attachments:
            first = attachments[0]
            kind = _str(first.get("type")) or "attachment"
            if kind == "location":
                coords = _dict(_dict(first.get("payload")).get("coordinates"))
                text = _location_text({"latitude": coords.get("lat"), "longitude": coords.get("long")})
        # The first photo or voice message among the attachments (a customer sends one at a time).
        media_kind, media_url = next(
            (
                (_str(a.get("type")), _str(_dict(a.get("payload")).get("url")))
                for a in attachments
                if _str(a.get("type")) in ("image", "audio") and _str(_dict(a.get("payload")).get("url"))
            ),
            ("", ""),
        )
        if message.get("is_unsupported"):
            kind, text, media_kind, media_url = "unsupported", "", "", ""
        supported = kind in SUPPORTED and (bool(text) or bool(media_url))
        # A tapped quick reply (our rating choices: messaging.meta.rating) carries its payload beside the title.
        quick_reply = _str(_dict(message.get("quick_reply")).get("payload"))
        result.messages.append(
            InboundMessage(
                platform,
                account_id,
                sender,
                "",
                mid,
                when,
                kind,
                text,
                supported,
                payload=quick_reply,
                media_kind=media_kind,
                media_url=media_url,
            )
        )
        return
    postback = event.get("postback")
    if isinstance(postback, dict):
        mid = _str(postback.get("mid")) or f"postback:{sender}:{_str(event.get('timestamp'))}"
        text = _str(postback.get("title")) or _str(postback.get("payload"))
        result.messages.append(
            InboundMessage(
                platform,
                account_id,
                sender,
                "",
                mid,
                when,
                "postback",
                text,
                bool(text and sender),
                payload=_str(postback.get("payload")),
            )
        )
        return
    delivery = event.get("delivery")
    if isinstance(delivery, dict):
        for mid in _list(delivery.get("mids")):
            if _str(mid):
                result.statuses.append(StatusUpdate(platform, account_id, _str(mid), "delivered", when))
        return
    read = event.get("read")
    if isinstance(read, dict):
        if _str(read.get("mid")):  # Instagram messaging_seen names the message
            result.statuses.append(StatusUpdate(platform, account_id, _str(read.get("mid")), "read", when))
        elif read.get("watermark") is not None:
            result.reads.append(
                ReadWatermark(platform, account_id, sender, _time(read.get("watermark"), millis=True))
            )
        return
    kinds = [key for key in event if key not in ("sender", "recipient", "timestamp")]
    result.ignored.append(f"{platform} event {','.join(kinds) or '?'}")
