"""Which endpoint serves a request.

- Without an affinity key: power of two choices (Ray Serve's default, vLLM router's ``power-of-two``): two
  endpoints drawn at random by weight, the one with fewer requests in flight per unit of weight wins.
  With a shared, fresh count in Redis this is close to least-outstanding, but two workers that choose at
  the same instant do not both pile onto the same idlest endpoint.
- With an affinity key (the conversation): consistent hashing with bounded load. The key's point on a
  ring of virtual nodes (64 per unit of weight) names the preferred endpoint, so that the conversation's
  prompt prefix stays in that server's cache; an endpoint carrying more than ``LLAMA_AFFINITY_LOAD_FACTOR``
  times its weighted share of the pool's requests is passed over for the next one on the ring.

This module only orders the candidates; ``state.pick`` applies the loads, circuits, health and caps
atomically in Redis and falls back to the least loaded eligible endpoint.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from functools import cache

from inference.endpoints import Endpoint

VNODES_PER_WEIGHT = 64


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@cache
def _ring(members: tuple[tuple[str, int], ...]) -> tuple[list[int], list[str]]:
    points = sorted(
        (_hash(f"{url}#{i}"), url) for url, weight in members for i in range(VNODES_PER_WEIGHT * weight)
    )
    return [point for point, _ in points], [url for _, url in points]


def ring_order(endpoints: list[Endpoint], key: str) -> list[str]:
    """The endpoints in the order the key's walk along the ring meets them (each once)."""
    hashes, urls = _ring(tuple(sorted((endpoint.url, endpoint.weight) for endpoint in endpoints)))
    if not hashes:
        return []
    start = bisect.bisect(hashes, _hash(key)) % len(hashes)
    order: list[str] = []
    seen: set[str] = set()
    for i in range(len(hashes)):
        url = urls[(start + i) % len(hashes)]
        if url not in seen:
            seen.add(url)
            order.append(url)
            if len(order) == len({e.url for e in endpoints}):
                break
    return order


def candidate_order(endpoints: list[Endpoint], *, affinity_key: str | None) -> tuple[list[Endpoint], str]:
    """The order and mode handed to the atomic pick in Redis (state.pick), which applies the loads.

    With an affinity key: the ring walk from the key (mode ``ring``: the first within its load bound wins).
    Without: two endpoints drawn at random by weight first (mode ``p2c``: the less loaded of the two wins).
    Either way the least loaded eligible endpoint is the fallback.
    """
    if not endpoints:
        return [], "p2c"
    if affinity_key:
        by_url = {endpoint.url: endpoint for endpoint in endpoints}
        return [by_url[url] for url in ring_order(endpoints, affinity_key)], "ring"
    if len(endpoints) == 1:
        return list(endpoints), "p2c"
    first = random.choices(endpoints, weights=[e.weight for e in endpoints])[0]
    rest = [e for e in endpoints if e is not first]
    second = random.choices(rest, weights=[e.weight for e in rest])[0]
    return [first, second, *(e for e in rest if e is not second)], "p2c"
