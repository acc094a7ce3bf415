"""Per-business ingest concurrency: at most ``CATALOG_IMPORTS_PER_BUSINESS`` imports of one business hold an
ingest worker at a time.

Imports of one business are serialised by a Postgres advisory lock anyway (``services.imports.import_run``); without
this, a tenant that queues fifty imports has fifty workers each waiting on that lock, and every other tenant's
import waits behind them. With it, an import that finds its business's slots taken is re-queued by the task
(``catalogs.tasks.run_import``) and its worker goes on to the next message.

A slot is a member of a Redis sorted set per business, scored with its expiry: a worker killed by its hard
time limit leaves a slot that lapses by itself (``SLOT_SECONDS``). Redis unreachable: the import runs (the
advisory lock still keeps it correct; only the fairness is lost) and a warning is logged.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from catalogs.models import Import
from catalogs.services import imports
from common.redis import sync_client

logger = logging.getLogger(__name__)

# Longer than an import may run (the task's hard time limit), so a live run never loses its slot.
SLOT_SECONDS = 3700 + 300

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    return 1
end
return 0
"""


def slot_key(business_id: int) -> str:
    return f"catalogs:import-slots:{business_id}"


def slot_acquire(*, business_id: int, import_id: int) -> bool:
    """Take one of the business's slots for this import (again, if it holds one already)."""
    now = time.time()
    try:
        taken = sync_client().eval(
            _ACQUIRE,
            1,
            slot_key(business_id),
            now,
            now + SLOT_SECONDS,
            import_id,
            settings.CATALOG_IMPORTS_PER_BUSINESS,
            SLOT_SECONDS,
        )
    except redis.RedisError:
        logger.warning("import %s: Redis unavailable, running without the per-business limit", import_id)
        return True
    return bool(taken)


def slot_release(*, business_id: int, import_id: int) -> None:
    try:
        sync_client().zrem(slot_key(business_id), import_id)
    except redis.RedisError:
        logger.warning("import %s: could not release its slot (it lapses by itself)", import_id)


def import_run_limited(*, import_id: int) -> bool:
    """Run the import within its business's slots. False when they are all taken: nothing ran, the import is
    still pending, and the caller tries again later. True otherwise (it ran, or there was nothing to run)."""
    row = Import.objects.filter(pk=import_id).values_list("business_id", "state").first()
    if row is None:
        return True
    business_id, state = row
    if state not in (Import.State.PENDING, Import.State.RUNNING):
        return True  # finished: import_run would do nothing; no slot needed
    if not slot_acquire(business_id=business_id, import_id=import_id):
        return False
    try:
        imports.import_run(import_id=import_id)
    finally:
        slot_release(business_id=business_id, import_id=import_id)
    return True
