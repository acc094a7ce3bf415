"""The Redis side of a streamed reply: its delta log (for resume) and its cancel signal (for stop).

Per agent message id:
- ``reply:<id>:log``: a list of JSON entries ``{"seq", "text", "reset"}`` in seq order, appended *before*
  each group send, so that a client that reconnects (to any ASGI process) reads what it missed and then
  takes the live stream, dropping any seq it already has;
- ``reply:<id>:cancel``: set by ``stop`` (and published on the channel of the same name, which the worker
  listens to while it streams).
"""

from __future__ import annotations

import json
from typing import Any

from messaging.ratelimits import redis

LOG_TTL_SECONDS = 3600


def log_key(message_id: int) -> str:
    return f"reply:{message_id}:log"


def cancel_key(message_id: int) -> str:
    return f"reply:{message_id}:cancel"


async def log_append(message_id: int, entry: dict[str, Any]) -> None:
    pipe = redis().pipeline(transaction=False)
    pipe.rpush(log_key(message_id), json.dumps(entry))
    pipe.expire(log_key(message_id), LOG_TTL_SECONDS)
    await pipe.execute()


async def log_read(message_id: int, after_seq: int = 0) -> list[dict[str, Any]]:
    """Entries with ``seq > after_seq`` (a reset entry starts the text over: keep from the last one)."""
    raw = await redis().lrange(log_key(message_id), 0, -1)
    return [entry for entry in (json.loads(r) for r in raw) if int(entry["seq"]) > after_seq]


async def log_last_seq(message_id: int) -> int:
    last = await redis().lindex(log_key(message_id), -1)
    return int(json.loads(last)["seq"]) if last else 0


async def cancel_request(message_id: int) -> None:
    client = redis()
    await client.set(cancel_key(message_id), "1", ex=LOG_TTL_SECONDS)
    await client.publish(cancel_key(message_id), "stop")


async def cancel_requested(message_id: int) -> bool:
    return bool(await redis().exists(cancel_key(message_id)))
