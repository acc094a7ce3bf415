"""Health of the pool: active probes, the state the command, /readyz and /metrics show.

``probe_pool()`` probes every endpoint: ``GET /health`` (vLLM: 200 empty body; llama.cpp: 200
``{"status":"ok"}``, 503 while the model loads), falling back to ``GET /v1/models`` where there is no
``/health``; then ``GET /v1/models`` to check that the endpoint serves the model it is configured for.
An endpoint whose last probe failed is skipped by routing until a probe passes or a real request to it
succeeds (while no endpoint is healthy, routing tries them anyway: panic mode, state.py).

Busy is not down. An endpoint with requests in flight is not probed at all: its real requests are the health
signal then (their failures count toward its circuit, a success clears an "unhealthy" mark). A server that
serves one request at a time (llama-cpp-python's: its ``/v1/models`` waits for the lock a generation holds)
would answer a probe only after the generation, so a probe that times out while requests are in flight
records the endpoint as healthy and busy, never as unhealthy.

Nobody has to schedule probes: the end of a chat call, when nobody has probed for ``LLAMA_PROBE_INTERVAL``
seconds, starts one in a background thread (``maybe_probe``; one prober at a time across all workers, by a
Redis lock). A Celery beat entry or cron running ``manage.py llama_pool probe`` can call it too.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from django.conf import settings

from inference import state
from inference.endpoints import Endpoint, pool_endpoints

PROBE_TIMEOUT = 2.0
# Readiness never probes the pool more often than this (LLAMA_PROBE_INTERVAL when longer).
READINESS_PROBE_INTERVAL = 5.0


@dataclass(frozen=True)
class ProbeResult:
    endpoint: str
    ok: bool
    reason: str
    models: tuple[str, ...]
    latency_ms: float


@dataclass(frozen=True)
class EndpointStatus:
    url: str
    source: str
    kind: str
    weight: int
    max_concurrency: int
    model: str
    healthy: bool | None  # None: never probed
    health_reason: str
    checked_at: float | None
    served_models: tuple[str, ...]
    inflight: int
    circuit: str
    circuit_failures: int
    circuit_reason: str
    open_until: float

    @property
    def routable(self) -> bool:
        """Would routing send a request here now (a due half-open trial counts)."""
        if self.healthy is False:
            return False
        return self.circuit == "closed" or time.time() >= self.open_until


def _model_ids(response: httpx.Response) -> list[str]:
    try:
        return [
            str(row["id"]) for row in response.json().get("data", []) if isinstance(row, dict) and "id" in row
        ]
    except (ValueError, AttributeError):
        return []


def _busy(endpoint: Endpoint, inflight: int, why: str) -> ProbeResult:
    """Record a busy endpoint as healthy, unless a probe already marked it unhealthy (then only a real
    request that succeeds clears the mark: a busy server is not evidence that it recovered)."""
    current = state.read_states([endpoint.url])[endpoint.url]
    reason = f"busy: {why} with {inflight} request(s) in flight"
    if current.healthy is False:
        return ProbeResult(endpoint.url, False, current.health_reason, current.served_models, 0.0)
    state.write_health(
        endpoint.url, ok=True, reason=reason, models=list(current.served_models), latency_ms=0.0
    )
    return ProbeResult(endpoint.url, True, reason, current.served_models, 0.0)


def _inflight(endpoint: Endpoint) -> int:
    return state.read_states([endpoint.url])[endpoint.url].inflight


def probe(endpoint: Endpoint) -> ProbeResult:
    """Probe one idle endpoint and store the result in Redis (a busy one: see the module docstring)."""
    inflight = _inflight(endpoint)
    if inflight:
        return _busy(endpoint, inflight, "not probed")
    started = time.perf_counter()
    ok, reason, models = False, "", []
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT, trust_env=False, headers=endpoint.headers()) as http:
            health = http.get(f"{endpoint.url}/health")
            if health.status_code == 503:
                reason = "not ready (503 on /health: loading)"
            elif health.status_code not in (200, 404, 405, 501):
                reason = f"/health answered {health.status_code}"
            else:
                listing = http.get(f"{endpoint.url}/v1/models")
                models = _model_ids(listing)
                wanted = endpoint.model or settings.LLAMA_MODEL
                if listing.status_code == 503:
                    reason = "not ready (503 on /v1/models: loading)"
                elif listing.status_code != 200:
                    reason = f"/v1/models answered {listing.status_code}"
                elif endpoint.kind != "embeddings" and wanted not in models:
                    reason = f"model {wanted!r} is not served here (serves: {', '.join(models) or 'nothing'})"
                else:
                    ok, reason = True, "ok"
    except httpx.TimeoutException as exc:
        # A request that started while we probed holds a one-at-a-time server: busy, not down.
        inflight = _inflight(endpoint)
        if inflight:
            return _busy(endpoint, inflight, f"the probe timed out ({type(exc).__name__})")
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    latency_ms = (time.perf_counter() - started) * 1000
    state.write_health(endpoint.url, ok=ok, reason=reason, models=models, latency_ms=latency_ms)
    return ProbeResult(endpoint.url, ok, reason, tuple(models), latency_ms)


def probe_endpoints(endpoints: list[Endpoint]) -> list[ProbeResult]:
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints)), thread_name_prefix="llama-probe") as pool:
        return list(pool.map(probe, endpoints))


def probe_pool() -> list[ProbeResult]:
    """Probe every endpoint now (for a periodic task, the command and /readyz)."""
    return probe_endpoints(pool_endpoints())


_last_probe_check = float("-inf")


def maybe_probe(endpoints: list[Endpoint]) -> None:
    """Probe the pool in a daemon thread when nobody has for ``LLAMA_PROBE_INTERVAL`` seconds (at the end of
    a call; endpoints with requests in flight are skipped by the probe itself)."""
    global _last_probe_check
    interval = settings.LLAMA_PROBE_INTERVAL
    now = time.monotonic()
    # Checked in-process first: the Redis lock is asked at most once per interval by each process.
    if interval <= 0 or now - _last_probe_check < interval:
        return
    _last_probe_check = now
    if not state.try_lock("probe", interval):
        return
    threading.Thread(target=probe_endpoints, args=(endpoints,), name="llama-probe", daemon=True).start()


def pool_status() -> list[EndpointStatus]:
    """Each endpoint with its last probe, in-flight count and circuit, as stored in Redis."""
    endpoints = pool_endpoints()
    states = state.read_states([endpoint.url for endpoint in endpoints])
    rows = []
    for endpoint in endpoints:
        current = states[endpoint.url]
        rows.append(
            EndpointStatus(
                url=endpoint.url,
                source=endpoint.source,
                kind=endpoint.kind,
                weight=endpoint.weight,
                max_concurrency=endpoint.max_concurrency,
                model=endpoint.model or settings.LLAMA_MODEL,
                healthy=current.healthy,
                health_reason=current.health_reason,
                checked_at=current.checked_at,
                served_models=current.served_models,
                inflight=current.inflight,
                circuit=current.circuit,
                circuit_failures=current.failures,
                circuit_reason=current.circuit_reason,
                open_until=current.open_until,
            )
        )
    return rows


def pool_readiness() -> tuple[bool, str]:
    """For /readyz: ready when at least one endpoint's last probe passed and its circuit lets requests in.

    It reads the stored health and probes only endpoints whose last probe is older than the probe interval
    (at least ``READINESS_PROBE_INTERVAL``), at most once per interval across all processes (a Redis lock):
    a flood of readiness checks is not a flood of probes."""
    endpoints = pool_endpoints()
    if not endpoints:
        return (
            False,
            "no inference endpoint configured (LLAMA_POOL unset and the embedded server is not running)",
        )
    checked = {row.url: row.checked_at for row in pool_status()}
    interval = max(settings.LLAMA_PROBE_INTERVAL, READINESS_PROBE_INTERVAL)
    now = time.time()
    stale = [e for e in endpoints if checked.get(e.url) is None or now - (checked[e.url] or 0.0) >= interval]
    if stale and state.try_lock("readyz-probe", interval):
        probe_endpoints(stale)
    rows = pool_status()
    ready = [row for row in rows if row.healthy and row.routable]
    problems = [
        f"{row.url}: {row.health_reason if not row.healthy else 'circuit ' + row.circuit}"
        for row in rows
        if row not in ready
    ]
    detail = f"{len(ready)}/{len(rows)} endpoint(s) ready"
    return bool(ready), detail + (f" ({'; '.join(problems)})" if problems else "")
