"""The only code that speaks to Meta: Graph API POSTs (sends) and GETs (ownership checks) with bounded retries.

Transient failures (transport errors, HTTP 429 and 5xx, and Meta's rate-limit error codes) are retried
with exponential back-off and jitter, honouring ``Retry-After`` up to ``META_SEND_BACKOFF_CAP``; after
``META_SEND_MAX_TRIES`` a ``TransientGraphError`` tells the caller to try again later. Every other error is
final and comes back as a ``GraphResult`` with the code Meta gave (131047: the 24-hour window is closed).

A message send (``send``) is not idempotent: Meta has no idempotency key, so a request that may have
reached Meta is never repeated. Only failures that happen before the request was written (connecting,
waiting for a pooled connection, writing it) are retried; a read timeout or a dropped connection after it
was written raises ``AmbiguousGraphError`` at once: Meta may have accepted the message.

Tokens travel in the Authorization header, never in the URL, so that access logs and exception messages
never carry them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

WINDOW_CLOSED = 131047
# Rate limits that Meta reports as 400s with a code: retried like a 429.
RATE_LIMIT_CODES = frozenset({4, 613, 80007, 130429, 131056})

_local = threading.local()


class TransientGraphError(Exception):
    """Every try failed transiently (429, 5xx, transport); the send may succeed later."""


class AmbiguousGraphError(Exception):
    """A send was written but no answer came back (read timeout, connection dropped): Meta may have accepted
    it. Not retried: repeating it could deliver the message twice."""


# Transport errors raised before the request was fully written: Meta cannot have acted on it.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)


@dataclass
class GraphResult:
    ok: bool
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    error_code: int | None = None
    error_message: str = ""

    @property
    def message_id(self) -> str:
        """The id of the sent message: WhatsApp ``messages[0].id``, Messenger/Instagram ``message_id``."""
        messages = self.body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "")
        return str(self.body.get("message_id") or "")

    @property
    def window_closed(self) -> bool:
        return self.error_code == WINDOW_CLOSED


def _client() -> httpx.Client:
    # One keep-alive client per thread (Celery prefork runs one task per process at a time).
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None or client.is_closed:
        client = httpx.Client(timeout=settings.META_GRAPH_TIMEOUT, headers={"User-Agent": "bizagent"})
        _local.client = client
    return client


def _error(body: dict[str, Any]) -> tuple[int | None, str]:
    error = body.get("error")
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    message = str(error.get("message") or "")
    details = error.get("error_data")
    if isinstance(details, dict) and details.get("details"):
        message = f"{message} ({details['details']})" if message else str(details["details"])
    return (code if isinstance(code, int) else None), message


def _delay(attempt: int, retry_after: str | None) -> float:
    cap: float = settings.META_SEND_BACKOFF_CAP
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            pass
    base: float = settings.META_SEND_BACKOFF * (2**attempt)
    return min(base * (0.5 + random.random() / 2), cap)


def post(node: str, body: dict[str, Any], *, token: str, edge: str = "messages") -> GraphResult:
    """POST ``body`` to ``{META_GRAPH_URL}/{node}/{edge}``, for requests that are safe to repeat (read
    receipts, typing indicators, webhook subscriptions). Raises TransientGraphError when every try failed
    transiently; returns the final result otherwise (ok or not)."""
    return _request("POST", node, edge, token=token, body=body)


def send(node: str, body: dict[str, Any], *, token: str) -> GraphResult:
    """POST a message to ``{META_GRAPH_URL}/{node}/messages``: like ``post``, except that a transport error
    after the request was written raises AmbiguousGraphError instead of being retried."""
    return _request("POST", node, "messages", token=token, body=body, repeatable=False)


def get(
    node: str, *, token: str | None, edge: str = "", params: Mapping[str, str] | None = None
) -> GraphResult:
    """GET ``{META_GRAPH_URL}/{node}[/{edge}]`` (reads used to verify what a token controls), with the same
    retry policy as ``post``. ``token`` None: no Authorization header (the OAuth code exchange, whose
    credentials Meta takes as query parameters)."""
    return _request("GET", node, edge, token=token, params=params)


def _request(
    method: str,
    node: str,
    edge: str,
    *,
    token: str | None,
    body: dict[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
    repeatable: bool = True,
) -> GraphResult:
    url = f"{settings.META_GRAPH_URL}/{node}/{edge}" if edge else f"{settings.META_GRAPH_URL}/{node}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tries = settings.META_SEND_MAX_TRIES
    # Per request, so that a changed setting applies to the kept-alive client too.
    timeout = settings.META_GRAPH_TIMEOUT
    last = ""
    for attempt in range(tries):
        retry_after: str | None = None
        try:
            if method == "POST":
                response = _client().post(url, json=body, headers=headers, timeout=timeout)
            else:
                response = _client().get(url, params=dict(params or {}), headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            if not repeatable and not isinstance(exc, _NOT_SENT):
                raise AmbiguousGraphError(
                    f"no answer after the request was sent ({type(exc).__name__})"
                ) from exc
            last = f"transport error: {type(exc).__name__}"
        else:
            try:
                parsed = response.json()
            except ValueError:
                parsed = {}
            parsed = parsed if isinstance(parsed, dict) else {}
            code, message = _error(parsed)
            if response.is_success:
                return GraphResult(True, response.status_code, parsed)
            transient = response.status_code == 429 or response.status_code >= 500 or code in RATE_LIMIT_CODES
            if not transient:
                return GraphResult(False, response.status_code, parsed, code, message)
            retry_after = response.headers.get("Retry-After")
            last = f"HTTP {response.status_code}" + (f" code {code}" if code is not None else "")
        if attempt + 1 < tries:
            wait = _delay(attempt, retry_after)
            logger.info("graph %s/%s: %s, retry %d in %.2fs", node, edge, last, attempt + 1, wait)
            time.sleep(wait)
    raise TransientGraphError(f"{last} after {tries} tries")


class DownloadRefused(Exception):
    """A media download Meta refused (an error status) or that is over the caller's limit; final."""


def download(url: str, *, token: str, max_bytes: int) -> tuple[bytes, str]:
    """GET a media file from the URL Graph's media node gave for it (WhatsApp's need the token), reading at most
    ``max_bytes``; returns its bytes and Content-Type. A download is safe to repeat: transient failures are
    retried as ``post``'s are, then raise TransientGraphError."""
    headers = {"Authorization": f"Bearer {token}"}
    tries = settings.META_SEND_MAX_TRIES
    last = ""
    for attempt in range(tries):
        retry_after: str | None = None
        try:
            with _client().stream(
                "GET", url, headers=headers, timeout=settings.META_GRAPH_TIMEOUT
            ) as response:
                if response.is_success:
                    return _read_capped(response, max_bytes), response.headers.get("content-type", "")
                if response.status_code != 429 and response.status_code < 500:
                    raise DownloadRefused(f"the media URL answered HTTP {response.status_code}")
                retry_after = response.headers.get("Retry-After")
                last = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last = f"transport error: {type(exc).__name__}"
        if attempt + 1 < tries:
            time.sleep(_delay(attempt, retry_after))
    raise TransientGraphError(f"media download: {last} after {tries} tries")


def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadRefused(f"the media is {int(declared):,} bytes, over the limit of {max_bytes:,}")
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise DownloadRefused(f"the media is larger than the limit of {max_bytes:,} bytes")
    return bytes(data)
