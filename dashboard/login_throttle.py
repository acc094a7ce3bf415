"""Sign-in throttling: failed attempts counted in Redis per account and per client address.

Both counters are checked before a password is: once either is over its limit, the sign-in is refused with
the same message whether or not the account exists, until the window ends. The account is the submitted
email in lower case (a change of letter case is the same account) and counts whether or not it exists, so
the limit reveals nothing. The address is the chat socket's (``messaging.ratelimits.client_address``: the
TCP peer, or ``TRUSTED_PROXY_HEADER`` when configured; an IPv6 /64 counts as one). A successful sign-in
clears its account's count, not its address's.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http import HttpRequest

from common.redis import sync_client
from messaging.ratelimits import client_address


def _keys(request: HttpRequest, username: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    keys = [(f"login:fail:account:{account}", settings.LOGIN_FAILURES_PER_ACCOUNT)]
    address = client_address(_scope(request))
    if address:
        keys.append((f"login:fail:address:{address}", settings.LOGIN_FAILURES_PER_ADDRESS))
    return keys


def _scope(request: HttpRequest) -> dict[str, object]:
    """The parts of an ASGI scope that ``client_address`` reads, from any request (tests use WSGI)."""
    headers = []
    if settings.TRUSTED_PROXY_HEADER:
        name = settings.TRUSTED_PROXY_HEADER
        value = request.META.get("HTTP_" + name.upper().replace("-", "_"))
        if value:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return {"client": (request.META.get("REMOTE_ADDR") or "", 0), "headers": headers}


def login_throttled(request: HttpRequest, username: str) -> bool:
    """Whether this account or this address has used up its failed sign-ins for now."""
    keys = _keys(request, username)
    counts = sync_client().mget([key for key, _ in keys])
    return any(int(count or 0) >= limit for count, (_, limit) in zip(counts, keys, strict=True))


def login_failed(request: HttpRequest, username: str) -> None:
    pipe = sync_client().pipeline()
    for key, _ in _keys(request, username):
        # The window starts at the first failure (created with its expiry only when absent; INCR keeps the
        # expiry), so more failures do not extend it.
        pipe.set(key, 0, ex=settings.LOGIN_THROTTLE_SECONDS, nx=True)
        pipe.incr(key)
    pipe.execute()


def login_succeeded(request: HttpRequest, username: str) -> None:
    account_key = _keys(request, username)[0][0]
    sync_client().delete(account_key)
