"""Idempotency keys on the REST API's POSTs (the ``Idempotency-Key`` header, as in the IETF draft and Stripe).

A client that retries a POST whose answer it never saw (a timeout, a dropped connection) sends the same key
again, and gets the answer of the first request instead of a second order of work:

- same key, same request (method, path, body): the stored response, with ``Idempotent-Replayed: true``;
- same key, another request: 422, nothing done;
- same key while the first request still runs: 409, nothing done (retry later).

Responses are stored in Redis per API key (the key's SHA-256, which is also what ``ApiKey.key_hash`` holds)
for ``API_IDEMPOTENCY_TTL_SECONDS``. Answers that did not run the operation (401, 403, 429, 5xx) are not
stored, so a retry after them runs it. A Redis that fails answers 503 (``RedisError`` reaches the API's
handler) rather than run a request it may already have run.

``idempotent`` wraps a django-ninja operation's ``run`` (``ninja.decorators.decorate_view``): it sees the
request before authentication and the rendered response after it. ``IdempotentRouter`` puts it on every POST
of the API's routers, so that no POST goes without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypedDict

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Router
from ninja.decorators import decorate_view
from ninja.types import TCallable

from common.problems import Problem, problem_response
from common.redis import sync_client

HEADER = "Idempotency-Key"
KEY_MAX_CHARS = 255
# How long a request may hold its key before another request with it may run (longer than any POST takes).
LOCK_SECONDS = 120
# Answers that never ran the operation: a retry must run it.
NOT_STORED = {401, 403, 429}

Run = Callable[..., HttpResponseBase]

logger = logging.getLogger(__name__)


class StoredResponse(TypedDict):
    fingerprint: str
    status: int
    content_type: str
    location: str
    body: str  # base64


def _caller(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()


def _fingerprint(request: HttpRequest) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.content_type == "multipart/form-data":
        # A client's retry may draw a new multipart boundary: compare the fields and the files' bytes.
        for name, values in sorted(request.POST.lists()):
            digest.update(json.dumps([name, values]).encode())
        for name, files in sorted(request.FILES.lists()):
            for upload in files:
                digest.update(json.dumps([name, upload.name, upload.size]).encode())
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
    else:
        digest.update(request.body)
    return digest.hexdigest()


def _replay(stored: StoredResponse) -> HttpResponse:
    response = HttpResponse(
        base64.b64decode(stored["body"]), status=stored["status"], content_type=stored["content_type"]
    )
    if stored["location"]:
        response["Location"] = stored["location"]
    response["Idempotent-Replayed"] = "true"
    return response


def _stored(client: Any, name: str) -> StoredResponse | None:
    raw = client.get(name)
    return json.loads(raw) if raw else None


def _store(client: Any, name: str, fingerprint: str, response: HttpResponseBase) -> None:
    if not isinstance(response, HttpResponse) or response.status_code >= 500:
        return
    if response.status_code in NOT_STORED:
        return
    record: StoredResponse = {
        "fingerprint": fingerprint,
        "status": response.status_code,
        "content_type": response.get("Content-Type", ""),
        "location": response.get("Location", ""),
        "body": base64.b64encode(response.content).decode(),
    }
    client.set(name, json.dumps(record), ex=settings.API_IDEMPOTENCY_TTL_SECONDS)


def idempotent(run: Run) -> Run:
    @wraps(run)
    def wrapper(request: HttpRequest, /, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get(HEADER)
        caller = _caller(request)
        if key is None or caller is None:
            return run(request, **kwargs)  # no key; or no credentials, which authentication refuses
        if not key or len(key) > KEY_MAX_CHARS or not key.isprintable() or not key.isascii():
            return problem_response(
                request,
                Problem(400, f"{HEADER} must be 1 to {KEY_MAX_CHARS} printable ASCII characters"),
            )
        try:
            fingerprint = _fingerprint(request)
        except RequestDataTooBig:
            return problem_response(request, Problem(413, "the request body is too large", code="too_large"))
        except SuspiciousOperation as exc:
            return problem_response(request, Problem(400, str(exc) or "the request body cannot be read"))
        name = f"idem:{caller}:{hashlib.sha256(key.encode()).hexdigest()}"
        try:
            return _once(request, kwargs, run=run, name=name, fingerprint=fingerprint)
        except redis.RedisError:
            logger.warning("idempotency store unavailable", exc_info=True)
            return problem_response(
                request,
                Problem(
                    503, "idempotency keys cannot be checked right now: retry", headers={"Retry-After": "5"}
                ),
            )

    return wrapper


def _once(
    request: HttpRequest, kwargs: dict[str, Any], *, run: Run, name: str, fingerprint: str
) -> HttpResponseBase:
    client = sync_client()
    stored = _stored(client, name)
    if stored is None:
        if not client.set(f"{name}:lock", 1, nx=True, ex=LOCK_SECONDS):
            return problem_response(
                request,
                Problem(
                    409,
                    f"a request with this {HEADER} is still running: retry when it has finished",
                    code="idempotency_key_in_use",
                    headers={"Retry-After": "1"},
                ),
            )
        try:
            # Looked up again under the lock: a request with this key may have finished meanwhile.
            stored = _stored(client, name)
            if stored is None:
                response = run(request, **kwargs)
                _store(client, name, fingerprint, response)
                return response
        finally:
            client.delete(f"{name}:lock")
    if stored["fingerprint"] != fingerprint:
        return problem_response(
            request,
            Problem(
                422,
                f"this {HEADER} was used for another request: send a new key for a new request",
                code="idempotency_key_reused",
            ),
        )
    return _replay(stored)


IDEMPOTENCY_PARAMETER = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "A key of your choosing (1-255 characters): a retry with the same key and body gets the "
    "first answer instead of doing the work twice; kept for 24 hours",
    "schema": {"type": "string", "minLength": 1, "maxLength": KEY_MAX_CHARS},
}


class IdempotentRouter(Router):
    """A django-ninja router whose every POST takes an ``Idempotency-Key`` (documented in the schema)."""

    def post(self, path: str, **kwargs: Any) -> Callable[[TCallable], TCallable]:
        extra = dict(kwargs.pop("openapi_extra", None) or {})
        extra["parameters"] = [*extra.get("parameters", []), IDEMPOTENCY_PARAMETER]
        register = super().post(path, openapi_extra=extra, **kwargs)

        def decorator(view: TCallable) -> TCallable:
            return register(decorate_view(idempotent)(view))

        return decorator
