"""The one seam that sends webhooks: a signed POST to an endpoint, never following redirects, within
``OUTBOUND_WEBHOOK_TIMEOUT``, to the address ``targets.resolve`` checked.

Clients are kept per thread and per (scheme, host, address, port), so consecutive deliveries to one endpoint
reuse their connection; a connection is never shared by two host names (it was opened with one of them as
its TLS server name).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import httpx
from django.conf import settings

from webhooks.targets import Target, TargetRefused, resolve

SNIPPET_CHARS = 500
# A receiver answers with a status; the start of its body is kept for the owner, the rest is not read.
READ_LIMIT_BYTES = 4096
CLIENTS_PER_THREAD = 32

_local = threading.local()


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    error: str
    snippet: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _client(target: Target) -> httpx.Client:
    clients: OrderedDict[tuple[str, str], httpx.Client] | None = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = OrderedDict()
    key = ("/".join(target.url.split("/", 3)[:3]), target.server_name)  # scheme://address:port
    client = clients.get(key)
    if client is not None and not client.is_closed:
        clients.move_to_end(key)
        return client
    timeout = settings.OUTBOUND_WEBHOOK_TIMEOUT
    client = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        headers={"User-Agent": "bizagent-webhooks/1"},
    )
    clients[key] = client
    while len(clients) > CLIENTS_PER_THREAD:
        clients.popitem(last=False)[1].close()
    return client


def _body_start(response: httpx.Response) -> str:
    read = b""
    for chunk in response.iter_bytes():
        read += chunk
        if len(read) >= READ_LIMIT_BYTES:
            break
    return read.decode("utf-8", "replace")[:SNIPPET_CHARS]


def post(url: str, body: bytes, headers: dict[str, str]) -> PostResult:
    """POST ``body`` to ``url``. Any status is a result; a refused address or a transport error is one with
    no status and the reason in ``error``."""
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        target = resolve(url)
    except TargetRefused as exc:
        return PostResult(None, f"refused: {exc}", "", elapsed())
    try:
        with _client(target).stream(
            "POST",
            target.url,
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions={"sni_hostname": target.server_name},
        ) as response:
            snippet = _body_start(response)
            status = response.status_code
    except httpx.TimeoutException as exc:
        return PostResult(None, f"timed out ({type(exc).__name__})", "", elapsed())
    except httpx.HTTPError as exc:
        return PostResult(None, f"{type(exc).__name__}: {exc}"[:300], "", elapsed())
    if 300 <= status < 400:
        return PostResult(status, f"HTTP {status}: redirects are not followed", snippet, elapsed())
    return PostResult(status, "" if 200 <= status < 300 else f"HTTP {status}", snippet, elapsed())
