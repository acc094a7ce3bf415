"""A fixed-window request limit counted in Redis, shared by every process (the REST API's limit per key).

One INCR per request on a key per window (it expires after its window), and the window's remaining time is what a refused
caller is told to wait (``Retry-After``). A fixed window lets a burst of twice the limit straddle a boundary;
for an API key's requests per minute that is an accepted price for one round trip (the chat socket, where a
burst matters more, counts a sliding window: ``messaging.ratelimits``).
"""

from __future__ import annotations

import logging
import time

import redis

from common.redis import sync_client

logger = logging.getLogger(__name__)


def fixed_window_hit(key: str, *, limit: int, window: int = 60) -> int | None:
    """Count one request against ``limit`` per ``window`` seconds; the seconds to wait when it is over the
    limit, else None. A Redis that fails lets the request through (logged): an outage of the counter must
    not take the API down with it."""
    bucket = int(time.time() // window)
    name = f"rl:fw:{key}:{bucket}"
    try:
        pipe = sync_client().pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count, _ = pipe.execute()
    except redis.RedisError:
        logger.warning("rate limit %s not counted: Redis failed", key, exc_info=True)
        return None
    if int(count) <= limit:
        return None
    return max(1, (bucket + 1) * window - int(time.time()))
