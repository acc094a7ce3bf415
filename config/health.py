"""Liveness and readiness endpoints for load balancers and orchestrators.

``/readyz`` is public (a load balancer sends no credentials): it answers ``{"status": "ok"}`` with 200 or
``{"status": "not ok"}`` with 503 and nothing else. The checks' details (endpoint addresses, exception text)
go only to a caller with ``Authorization: Bearer <METRICS_TOKEN>``, as for /metrics. The inference check reads
the pool's stored health (Redis) and probes only endpoints whose last probe is older than the probe interval,
at most once per interval across all processes (a Redis lock): a flood of requests is not a flood of probes.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from common.redis import sync_client

CheckResult = tuple[bool, str]


def check_database() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        return False, "pgvector extension is not installed (run migrations)"
    return True, f"pgvector {row[0]}"


def check_redis() -> CheckResult:
    sync_client().ping()
    return True, "ping ok"


def check_worker() -> CheckResult:
    from config.celery import app

    # limit=1: answer as soon as one worker replies instead of waiting out the timeout.
    replies = app.control.ping(timeout=0.5, limit=1)
    if not replies:
        return False, "no Celery worker answered a ping"
    return True, f"{len(replies)} worker(s)"


def check_inference() -> CheckResult:
    from inference.health import pool_readiness

    return pool_readiness()


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "redis": check_redis,
    "worker": check_worker,
    "inference": check_inference,
}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def may_see_details(request: HttpRequest) -> bool:
    """The caller sent ``Authorization: Bearer <METRICS_TOKEN>`` (no token configured: nobody may)."""
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            ok, detail = check()
        except Exception as exc:  # a readiness probe reports every failure, whatever it is
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results[name] = {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}
    ready = all(result["ok"] for result in results.values())
    status = 200 if ready else 503
    if not may_see_details(request):
        return JsonResponse({"status": "ok" if ready else "not ok"}, status=status)
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": results}, status=status)
