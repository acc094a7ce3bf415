"""Rate limits for the chat websocket, counted in Redis so that every ASGI process shares them."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from common.redis import async_client


async def hit(key: str, *, limit: int, window: int = 60) -> bool:
    """Count one event; False (and not counted) when the rate over the last ``window`` seconds would go over
    ``limit``."""
    return await hit_all([(key, limit)], window=window) is None


async def hit_all(limits: list[tuple[str, int]], *, window: int = 60) -> int | None:
    """Count one event against each ``(key, limit)``, in one round trip. Returns the index of the first limit
    the event would take over (then none of them counts it: retrying while limited does not stretch a limit
    into the next window), or None.

    Each is a sliding-window estimate: this window's count plus the previous window's, weighted by the share
    of it still inside the last ``window`` seconds. A plain fixed window would let a burst through twice,
    once on each side of a window's boundary."""
    now = time.time()
    bucket = int(now // window)
    currents = [f"rl:{key}:{bucket}" for key, _ in limits]
    pipe = async_client().pipeline()
    for (key, _), current in zip(limits, currents, strict=True):
        pipe.incr(current)
        pipe.expire(current, 2 * window + 1)
        pipe.get(f"rl:{key}:{bucket - 1}")
    results = await pipe.execute()
    still_inside = 1 - (now - bucket * window) / window
    for index, (_, limit) in enumerate(limits):
        count, _, before = results[3 * index : 3 * index + 3]
        if int(count) + int(before or 0) * still_inside > limit:
            undo = async_client().pipeline()
            for current in currents:
                undo.decr(current)
            await undo.execute()
            return index
    return None


# --- Client addresses ---------------------------------------------------------------------------------------


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The address a connection's limits are counted under, or None when there is none (a unix socket
    without a configured proxy header).

    Without ``TRUSTED_PROXY_HEADER`` it is the TCP peer, and no header is read: a client can write any
    X-Forwarded-For it likes. With it, our proxies append to that header, so the entry ``TRUSTED_PROXY_HOPS``
    from the right is what the outermost of them saw; anything left of it came from the client. A header
    with fewer entries, or one that is not an address, falls back to the peer. IPv6 addresses count per /64
    (one subscriber's usual allocation: a client has the whole /64 to pick from)."""
    chosen: str | None = None
    name = settings.TRUSTED_PROXY_HEADER.lower().encode("latin-1")
    if name:
        values = [value.decode("latin-1") for key, value in scope.get("headers") or [] if key.lower() == name]
        entries = [part.strip() for value in values for part in value.split(",") if part.strip()]
        hops = settings.TRUSTED_PROXY_HOPS
        if len(entries) >= hops:
            chosen = entries[-hops]
    address = _parse_address(chosen) if chosen else None
    if address is None:
        peer = scope.get("client")
        address = _parse_address(str(peer[0])) if peer else None
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it: ``203.0.113.9``, ``2001:db8::1``, and with a port ``203.0.113.9:443``
    or ``[2001:db8::1]:443``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_message_limit() -> int:
    """Messages per minute one address may send to one business: CHAT_ADDRESS_MESSAGES_PER_MINUTE, and never
    more than its share (CHAT_ADDRESS_BUSINESS_SHARE_PERCENT) of the business's cap, so that no single
    address can fill the cap and lock the business's other customers out."""
    share = settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE * settings.CHAT_ADDRESS_BUSINESS_SHARE_PERCENT // 100
    return max(1, min(settings.CHAT_ADDRESS_MESSAGES_PER_MINUTE, share))


# --- Limits ----------------------------------------------------------------------------------------------------

# What a refused message or upload is told, by error code (docs/websocket-protocol.md, docs/widget.md).
REFUSALS = {
    "rate_limited": "Too many messages; wait a minute.",
    "address_rate_limited": "Too many messages from your network; wait a minute.",
    "business_rate_limited": "This chat is busy; try again in a minute.",
    "upload_rate_limited": "Too many photos; wait a minute.",
}


async def message_allowed(business_id: int, visitor_id: str, address: str | None = None) -> str | None:
    """None when a message may be stored, else the error code. Counted per visitor, per address (at this
    business) and per business, in that order: a refused message counts against none of them."""
    return await _allowed(_message_limits(business_id, visitor_id, address))


async def upload_allowed(business_id: int, visitor_id: str, address: str | None = None) -> str | None:
    """None when a widget photo upload may be stored, else the error code: it is a message (the limits of
    ``message_allowed``, counted with the visitor's typed messages) and an upload, counted per visitor and per
    address by their own limits (a photo keeps up to MESSAGE_MEDIA_MAX_BYTES in storage). A refused upload
    counts against none of them."""
    limits = [
        (f"up:v:{business_id}:{visitor_id}", settings.CHAT_VISITOR_UPLOADS_PER_MINUTE, "upload_rate_limited")
    ]
    if address is not None:
        limits.append(
            (f"up:a:{business_id}:{address}", settings.CHAT_ADDRESS_UPLOADS_PER_MINUTE, "upload_rate_limited")
        )
    return await _allowed(_message_limits(business_id, visitor_id, address) + limits)


def _message_limits(business_id: int, visitor_id: str, address: str | None) -> list[tuple[str, int, str]]:
    """A message's limits, in the order they are counted: (key, limit, the error code over it)."""
    limits = [(f"v:{business_id}:{visitor_id}", settings.CHAT_VISITOR_MESSAGES_PER_MINUTE, "rate_limited")]
    if address is not None:
        limits.append((f"a:{business_id}:{address}", address_message_limit(), "address_rate_limited"))
    limits.append((f"b:{business_id}", settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE, "business_rate_limited"))
    return limits


async def _allowed(limits: list[tuple[str, int, str]]) -> str | None:
    refused = await hit_all([(key, limit) for key, limit, _ in limits])
    return None if refused is None else limits[refused][2]


async def feedback_allowed(business_id: int, visitor_id: str) -> bool:
    """Count one ``feedback`` frame of a visitor; False (not counted) over CHAT_VISITOR_FEEDBACK_PER_MINUTE. Its
    own limit: rating replies never uses up the visitor's messages."""
    return await hit(f"fb:{business_id}:{visitor_id}", limit=settings.CHAT_VISITOR_FEEDBACK_PER_MINUTE)


async def new_visitor_allowed(business_id: int, address: str | None) -> bool:
    """Count one visitor id minted for a ``hello`` without a valid token; False (not counted) over
    CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE for this address at this business."""
    if address is None:
        return True
    return await hit(f"nv:{business_id}:{address}", limit=settings.CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE)


async def address_connection_open(business_id: int, address: str | None, channel_name: str) -> bool:
    """Register a socket from an address; False (and not registered) over CHAT_ADDRESS_MAX_CONNECTIONS."""
    if address is None:
        return True
    return await _register(
        f"aconns:{business_id}:{address}", channel_name, settings.CHAT_ADDRESS_MAX_CONNECTIONS
    )


async def address_connection_close(business_id: int, address: str | None, channel_name: str) -> None:
    if address is not None:
        await async_client().zrem(f"aconns:{business_id}:{address}", channel_name)


async def connection_open(business_id: int, visitor_id: str, channel_name: str) -> bool:
    """Register a socket of a visitor; False (and not registered) when it has too many open."""
    return await _register(
        f"conns:{business_id}:{visitor_id}", channel_name, settings.CHAT_VISITOR_MAX_CONNECTIONS
    )


async def _register(key: str, channel_name: str, limit: int) -> bool:
    now = time.time()
    pipe = async_client().pipeline()
    # Entries of processes that died without a disconnect fall out after a day.
    pipe.zremrangebyscore(key, 0, now - 86400)
    pipe.zadd(key, {channel_name: now})
    pipe.zcard(key)
    pipe.expire(key, 86400)
    _, _, count, _ = await pipe.execute()
    if int(count) > limit:
        await async_client().zrem(key, channel_name)
        return False
    return True


async def connection_close(business_id: int, visitor_id: str, channel_name: str) -> None:
    await async_client().zrem(f"conns:{business_id}:{visitor_id}", channel_name)
