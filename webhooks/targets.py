"""Where a webhook may be sent: the address rule against server-side request forgery.

An endpoint URL is the owner's to choose, so it could name this deployment's own network (the database,
Redis, a cloud metadata service). Outside development every address its host resolves to must be public:
not private, loopback, link-local, shared, multicast, reserved or unspecified (an IPv6 address carrying an
IPv4 one is judged as that one): the rule of ``common.safe_fetch``, the one the catalog's URL fetches use. The request then connects to the address that was checked, with the URL's host
in the Host header and the TLS server name, so a DNS answer that changes between the check and the
connection (DNS rebinding) changes nothing. ``OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS`` (on with DEBUG)
lifts the address rule for development and tests; plain http is allowed only with
``OUTBOUND_WEBHOOK_ALLOW_HTTP`` (on with DEBUG).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from common.safe_fetch import FetchRefused, host_addresses, is_public_address

DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefused(ValueError):
    """The URL may not be sent to; the message says why, for the owner."""


@dataclass(frozen=True)
class Target:
    url: str  # the URL with the checked address in place of the host name
    host_header: str  # the URL's host (and port, when it has one)
    server_name: str  # for TLS: the certificate must name the URL's host, not the address


def _allowed_schemes() -> tuple[str, ...]:
    # Bodies carry customers' messages: only development sends them in clear text.
    return ("http", "https") if settings.OUTBOUND_WEBHOOK_ALLOW_HTTP else ("https",)


def resolve(url: str) -> Target:
    """Check ``url`` (scheme, host, and each address the host resolves to) and return where to connect.
    Raises ``TargetRefused``."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError as exc:
        raise TargetRefused("the URL is not valid") from exc
    if parts.scheme.lower() not in _allowed_schemes():
        raise TargetRefused(f"the URL must start with {' or '.join(s + '://' for s in _allowed_schemes())}")
    host = parts.hostname
    if not host:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not carry a user name or password")
    try:
        addresses = host_addresses(host, port)
    except FetchRefused as exc:
        raise TargetRefused(str(exc)) from exc
    if not settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS:
        for address in addresses:
            if not is_public_address(address):
                raise TargetRefused(f"the host {host!r} resolves to {address}, which is not a public address")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Target(
        url=urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, "")),
        host_header=parts.netloc,
        server_name=host,
    )
