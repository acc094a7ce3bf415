"""Routing state shared in Redis by every worker process on every machine (keys under ``bizagent:pool:``).

- ``inflight:<endpoint>`` and ``business:<id>:inflight``: sorted sets of leases scored by their expiry. A
  lease is taken atomically under a cap and dropped when the call ends; one whose worker crashed expires
  on its own after the longest possible reply, so a dead process cannot leak a slot for ever.
- ``circuit:<endpoint>``: a hash (state, consecutive failures, open_until, reason); ``circuit:<endpoint>:trial``
  is the single half-open trial, claimed with SET NX.
- ``health:<endpoint>``: the last active probe (ok, reason, served models, checked_at); ``ok`` is ``1``
  (healthy, or busy: a probe skipped or timed out while requests were in flight) or ``0`` (unhealthy).
  A real request that succeeds clears a ``0``: real requests weigh more than probes.
- ``business:<id>:tokens:<window>``: prompt+completion tokens used in a fixed window.

The sync redis client is used from async code too: each call is one round trip, and cleanup in ``finally``
needs no await. A reply worker's loop serves many replies, so each call holds them all for that round trip;
an asyncio client per loop gained nothing and costs more Python per call (docs/benchmarks.md, *Inference
pool*). Instead there are fewer calls on the loop: the pick says whether a success has anything to reset
(most calls: no ``record_success`` at all), and a reply worker gives its slots back from a thread
(``slots.release``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

from common.redis import sync_client

PREFIX = "bizagent:pool:"

# Takes a lease in a sorted set if fewer than ARGV[4] live leases are there; returns the new count or -1.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if tonumber(ARGV[4]) > 0 and n >= tonumber(ARGV[4]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000) + 1000)
return n + 1
"""

# One failure: count it; open the circuit at the threshold, or at once when it was a half-open trial.
_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'last_error', ARGV[4], 'last_error_at', ARGV[1])
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tonumber(ARGV[1]) + tonumber(ARGV[3]),
             'reason', ARGV[4], 'opened_at', ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

# A success closes the circuit and clears an "unhealthy" mark left by a probe (writes only when there is
# something to reset). KEYS: circuit hash, trial key, health hash. ARGV: now.
_SUCCEED = """
local state = redis.call('HGET', KEYS[1], 'state')
local failures = redis.call('HGET', KEYS[1], 'failures')
local changed = 0
if (state and state ~= 'closed') or (failures and failures ~= '0') then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'reason', '')
  redis.call('DEL', KEYS[2])
  changed = 1
end
if redis.call('HGET', KEYS[3], 'ok') == '0' then
  redis.call('HSET', KEYS[3], 'ok', '1', 'reason', 'ok (a request succeeded)', 'checked_at', ARGV[1])
  changed = 1
end
return changed
"""

# Claim the single half-open trial of an open circuit whose cooldown has passed.
_TRIAL = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' and state ~= 'half_open' then return 0 end
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if tonumber(ARGV[1]) < open_until then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'half_open')
  return 1
end
return 0
"""


# Route and take a slot in one round trip. KEYS: per candidate, in the caller's order: inflight zset,
# circuit hash, health hash, trial key; then the panic counter hash. ARGV: now, lease expiry, lease, trial
# ttl ms, mode (ring | p2c), load factor, then cap and weight per candidate. Eligible: last probe not
# failed, circuit closed, under its cap. Choice: a due half-open trial first; then, for "ring", the first
# candidate within its bounded load (consistent hashing with bounded loads); for "p2c", the less loaded per
# weight of the first two; else the least loaded per weight.
# Panic (Envoy's panic threshold, at 0%): when no candidate is healthy (every one unhealthy or its circuit
# open), health and circuits are ignored and the least loaded candidate under its cap is taken (status
# "panic"; "full" when at its cap, so the caller queues), and the panic counter is bumped.
# Returns {chosen index or 0, whether the chosen one's circuit or health holds anything a success must reset
# (1) or not (0), whether this was a panic pick (1) or not (0), then count and status per candidate}.
_PICK = """
local now = tonumber(ARGV[1])
local n = (#KEYS - 1) / 4
local counts, statuses, caps, weights, dirty = {}, {}, {}, {}, {}
for i = 1, n do
  local zkey = KEYS[4 * i - 3]
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  local count = redis.call('ZCARD', zkey)
  local circuit = redis.call('HMGET', KEYS[4 * i - 2], 'state', 'open_until', 'failures')
  local healthy = redis.call('HGET', KEYS[4 * i - 1], 'ok')
  caps[i] = tonumber(ARGV[5 + 2 * i])
  weights[i] = tonumber(ARGV[6 + 2 * i])
  local status = 'ok'
  if healthy == '0' then
    status = 'unhealthy'
  elseif circuit[1] and circuit[1] ~= 'closed' then
    if now >= tonumber(circuit[2] or '0') then status = 'trial' else status = 'open' end
  end
  if (status == 'ok' or status == 'trial') and caps[i] > 0 and count >= caps[i] then status = 'full' end
  counts[i] = count
  statuses[i] = status
  dirty[i] = ((circuit[1] and circuit[1] ~= 'closed') or (circuit[3] and circuit[3] ~= '0')
              or healthy == '0') and 1 or 0
end
local chosen = 0
for i = 1, n do
  if statuses[i] == 'trial' then
    if redis.call('SET', KEYS[4 * i], ARGV[3], 'NX', 'PX', ARGV[4]) then
      redis.call('HSET', KEYS[4 * i - 2], 'state', 'half_open')
      chosen = i
      break
    end
    statuses[i] = 'open'
  end
end
local panic = 0
if chosen == 0 then
  local healthy_any = false
  for i = 1, n do
    if statuses[i] == 'ok' or statuses[i] == 'full' then healthy_any = true end
  end
  if not healthy_any then
    panic = 1
    for i = 1, n do
      if caps[i] > 0 and counts[i] >= caps[i] then statuses[i] = 'full' else statuses[i] = 'panic' end
    end
  end
end
if chosen == 0 and ARGV[5] == 'ring' then
  local total, wsum = 0, 0
  for i = 1, n do
    if statuses[i] == 'ok' or statuses[i] == 'full' then
      total = total + counts[i]
      wsum = wsum + weights[i]
    end
  end
  for i = 1, n do
    if statuses[i] == 'ok' and counts[i] + 1 <= math.ceil(tonumber(ARGV[6]) * (total + 1) * weights[i] / wsum) then
      chosen = i
      break
    end
  end
elseif chosen == 0 and ARGV[5] == 'p2c' then
  for i = 1, math.min(2, n) do
    if statuses[i] == 'ok' and (chosen == 0 or counts[i] / weights[i] < counts[chosen] / weights[chosen]) then
      chosen = i
    end
  end
end
if chosen == 0 then
  for i = 1, n do
    if (statuses[i] == 'ok' or statuses[i] == 'panic')
       and (chosen == 0 or counts[i] / weights[i] < counts[chosen] / weights[chosen]) then
      chosen = i
    end
  end
end
if chosen > 0 then
  local zkey = KEYS[4 * chosen - 3]
  redis.call('ZADD', zkey, ARGV[2], ARGV[3])
  redis.call('PEXPIREAT', zkey, math.floor(tonumber(ARGV[2]) * 1000) + 1000)
  counts[chosen] = counts[chosen] + 1
  if panic == 1 then redis.call('HINCRBY', KEYS[#KEYS], ARGV[6 + 2 * n + chosen], 1) end
end
local out = {chosen, chosen > 0 and dirty[chosen] or 0, panic}
for i = 1, n do
  out[#out + 1] = counts[i]
  out[#out + 1] = statuses[i]
end
return out
"""

PANIC_KEY = PREFIX + "metrics:panic"


def client() -> redis.Redis:
    # redis-py's pool notices a fork and reconnects in the child, so one client per process is safe.
    return sync_client()


@cache
def _script(url: str, source: str) -> redis.commands.core.Script:
    return sync_client(url).register_script(source)


def _run(source: str, keys: list[str], args: list[str | int | float]) -> int:
    return int(_script(settings.REDIS_URL, source)(keys=keys, args=args))


def inflight_key(endpoint: str) -> str:
    return f"{PREFIX}inflight:{endpoint}"


def circuit_key(endpoint: str) -> str:
    return f"{PREFIX}circuit:{endpoint}"


def health_key(endpoint: str) -> str:
    return f"{PREFIX}health:{endpoint}"


def business_inflight_key(business_id: int) -> str:
    return f"{PREFIX}business:{business_id}:inflight"


def business_tokens_key(business_id: int, now: float | None = None) -> str:
    window = settings.LLAMA_BUSINESS_BUDGET_WINDOW
    return f"{PREFIX}business:{business_id}:tokens:{int((now or time.time()) // window)}"


def lease_seconds() -> float:
    # The longest a live call holds a slot: it may queue up to LLAMA_QUEUE_TIMEOUT for its slots, and
    # its deadline (LLAMA_REPLY_TIMEOUT) counts from the first endpoint slot it got. A lease older than that
    # belongs to a dead worker. The margin covers clock skew between machines (leases are scored by each
    # worker's wall clock).
    return settings.LLAMA_REPLY_TIMEOUT + settings.LLAMA_QUEUE_TIMEOUT + 5.0


def new_lease() -> str:
    return uuid.uuid4().hex


def acquire(key: str, lease: str, cap: int) -> int:
    """Take ``lease`` in ``key`` if fewer than ``cap`` are held; the new count, or -1 when full."""
    now = time.time()
    return _run(_ACQUIRE, [key], [now, now + lease_seconds(), lease, cap])


@dataclass(frozen=True)
class Pick:
    chosen: str | None  # the endpoint whose slot ``lease`` now holds
    lease: str
    counts: dict[str, int]
    statuses: dict[str, str]  # ok | trial | full | open | unhealthy | panic
    # The chosen endpoint's circuit is closed with no failure counted and no probe marked it unhealthy: a
    # success has nothing to reset.
    clean: bool = False
    # No candidate was healthy: health and circuits were ignored for this pick.
    panic: bool = False


def pick(order: list[tuple[str, int, int]], *, mode: str, load_factor: float) -> Pick:
    """Choose among ``order`` ((endpoint, cap, weight), in preference order) and take a slot, atomically."""
    now = time.time()
    lease = new_lease()
    keys: list[str] = []
    args: list[str | int | float] = [
        now,
        now + lease_seconds(),
        lease,
        int((settings.LLAMA_CONNECT_TIMEOUT + settings.LLAMA_FIRST_TOKEN_TIMEOUT) * 1000),
        mode,
        load_factor,
    ]
    for name, cap, weight in order:
        keys += [inflight_key(name), circuit_key(name), health_key(name), circuit_key(name) + ":trial"]
        args += [cap, weight]
    keys.append(PANIC_KEY)
    args += [name for name, _, _ in order]
    reply = _script(settings.REDIS_URL, _PICK)(keys=keys, args=args)
    chosen = int(reply[0])
    counts = {name: int(reply[3 + 2 * i]) for i, (name, _, _) in enumerate(order)}
    statuses = {
        name: (raw.decode() if isinstance(raw, bytes) else str(raw))
        for (name, _, _), raw in zip(order, reply[4::2], strict=True)
    }
    clean = bool(chosen) and not int(reply[1])
    return Pick(order[chosen - 1][0] if chosen else None, lease, counts, statuses, clean, bool(int(reply[2])))


def release(key: str, lease: str) -> None:
    client().zrem(key, lease)


@dataclass(frozen=True)
class EndpointState:
    inflight: int
    circuit: str  # closed | open | half_open
    open_until: float
    failures: int
    circuit_reason: str
    healthy: bool | None  # None: never probed
    health_reason: str
    served_models: tuple[str, ...]
    checked_at: float | None


def _text(raw: dict[bytes, bytes], field: str, default: str = "") -> str:
    value = raw.get(field.encode())
    return value.decode() if value is not None else default


def read_states(endpoints: list[str]) -> dict[str, EndpointState]:
    """In-flight count, circuit and health of each endpoint, in one round trip."""
    now = time.time()
    pipe = client().pipeline(transaction=False)
    for name in endpoints:
        pipe.zcount(inflight_key(name), now, "+inf")
        pipe.hgetall(circuit_key(name))
        pipe.hgetall(health_key(name))
    replies = pipe.execute()
    states: dict[str, EndpointState] = {}
    for i, name in enumerate(endpoints):
        count, circuit, health = replies[3 * i : 3 * i + 3]
        ok = _text(health, "ok")
        checked = _text(health, "checked_at")
        models = _text(health, "models")
        states[name] = EndpointState(
            inflight=int(count),
            circuit=_text(circuit, "state", "closed"),
            open_until=float(_text(circuit, "open_until", "0")),
            failures=int(_text(circuit, "failures", "0")),
            circuit_reason=_text(circuit, "reason") or _text(circuit, "last_error"),
            healthy=None if not ok else ok == "1",
            health_reason=_text(health, "reason"),
            served_models=tuple(filter(None, models.split("\n"))),
            checked_at=float(checked) if checked else None,
        )
    return states


def record_failure(endpoint: str, reason: str) -> bool:
    """Count a failure; True when this one opened the circuit."""
    return bool(
        _run(
            _FAIL,
            [circuit_key(endpoint), circuit_key(endpoint) + ":trial"],
            [time.time(), settings.LLAMA_CIRCUIT_FAILURES, settings.LLAMA_CIRCUIT_COOLDOWN, reason[:300]],
        )
    )


def record_success(endpoint: str) -> None:
    """Close the circuit and clear a probe's "unhealthy" mark (a real request just succeeded)."""
    _run(
        _SUCCEED,
        [circuit_key(endpoint), circuit_key(endpoint) + ":trial", health_key(endpoint)],
        [time.time()],
    )


def claim_trial(endpoint: str) -> bool:
    """Take the one half-open trial of an open circuit whose cooldown is over."""
    # The claim lasts as long as a first token may take, so a trial whose worker died is retaken later.
    ttl_ms = int((settings.LLAMA_CONNECT_TIMEOUT + settings.LLAMA_FIRST_TOKEN_TIMEOUT) * 1000)
    return bool(
        _run(
            _TRIAL,
            [circuit_key(endpoint), circuit_key(endpoint) + ":trial"],
            [time.time(), new_lease(), ttl_ms],
        )
    )


def write_health(endpoint: str, *, ok: bool, reason: str, models: list[str], latency_ms: float) -> None:
    client().hset(
        health_key(endpoint),
        mapping={
            "ok": "1" if ok else "0",
            "reason": reason[:300],
            "models": "\n".join(models),
            "checked_at": time.time(),
            "latency_ms": round(latency_ms, 1),
        },
    )


def tokens_used(business_id: int) -> int:
    raw = client().get(business_tokens_key(business_id))
    return int(raw) if raw else 0


def add_tokens(business_id: int, tokens: int) -> None:
    if tokens <= 0:
        return
    key = business_tokens_key(business_id)
    pipe = client().pipeline(transaction=False)
    pipe.incrby(key, tokens)
    pipe.expire(key, settings.LLAMA_BUSINESS_BUDGET_WINDOW * 2)
    pipe.execute()


def try_lock(name: str, seconds: float) -> bool:
    """A lock that expires on its own (lazy probes: one prober per interval across all workers)."""
    return bool(client().set(f"{PREFIX}lock:{name}", "1", nx=True, px=max(1, int(seconds * 1000))))


def reset() -> None:
    """Delete every key of the pool's state (tests, and ``llama_pool reset``)."""
    keys = list(client().scan_iter(match=f"{PREFIX}*", count=500))
    if keys:
        client().delete(*keys)
