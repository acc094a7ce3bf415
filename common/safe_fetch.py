"""An HTTP GET of a URL that someone else gave us (a feed, a catalog to import), safe against SSRF.

The rule (docs/security.md, "Fetching URLs"):

- ``http`` and ``https`` only;
- the host name is resolved here and EVERY address it resolves to is checked: loopback, private, link-local,
  multicast, reserved, unspecified and shared (CGNAT) addresses are refused, IPv4 and IPv6 alike, also when
  an IPv6 address carries an IPv4 one (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64);
- the connection goes to the address that was checked (the URL's host is replaced by it; ``Host`` and, for
  TLS, the SNI name and the certificate check keep the name), so a second DNS answer cannot swap in another
  address between the check and the connection (DNS rebinding);
- redirects are followed here, at most ``SAFE_FETCH_MAX_REDIRECTS``, each target checked like the first URL;
- the body is streamed to the caller's file and cut off past ``max_bytes``; the whole fetch, redirects
  included, has one deadline (``SAFE_FETCH_TIMEOUT``) besides httpx's connect and read timeouts.

``SAFE_FETCH_ALLOW_PRIVATE`` lifts the address rule (on by default with DEBUG, off in production);
``SAFE_FETCH_ALLOWED_NETWORKS`` exempts the operator's own networks (an internal feed server). A conditional
GET sends ``If-None-Match`` / ``If-Modified-Since`` and returns status 304 without a body.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Shared address space (RFC 6598, carrier-grade NAT): not global, and not "private" in Python's sense.
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
READ_CHUNK = 1 << 16
USER_AGENT = "bizagent-fetch/1"


class FetchRefused(Exception):
    """The URL, one of its redirects or its answer is refused; the message is for a person."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fetch got: 200 (the body is in the caller's file) or 304 (nothing written)."""

    status: int
    url: str  # after redirects
    size: int
    etag: str
    last_modified: str
    content_type: str
    headers: Mapping[str, str]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo's client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return False
    # is_global is False for private, loopback, link-local, unspecified, documentation and benchmark ranges;
    # multicast and some reserved ranges count as global, so they are refused by name.
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def is_public_address(ip: IPAddress) -> bool:
    """The address rule alone, without the settings that relax it: a public unicast address (an IPv6
    address carrying an IPv4 one is judged as that one). Outbound webhooks apply it with their own setting."""
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return _public(embedded if embedded is not None else ip)


def address_allowed(ip: IPAddress) -> bool:
    """Whether a connection to this address is allowed under the rule and the settings that relax it."""
    if settings.SAFE_FETCH_ALLOW_PRIVATE:
        return True
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.SAFE_FETCH_ALLOWED_NETWORKS]
    if any(ip.version == net.version and ip in net for net in networks):
        return True
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if embedded is not None:
        return address_allowed(embedded)
    return _public(ip)


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL  # as given (with the name)
    address: IPAddress  # the checked address the connection goes to


def host_addresses(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (each one is checked: which one a connection would use is not ours
    to choose); ``FetchRefused`` when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchRefused(f"the host {host!r} does not resolve") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _resolve(url: str) -> _Target:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"not a valid URL ({exc})") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise FetchRefused("only http and https URLs can be fetched")
    host = parsed.host
    if not host:
        raise FetchRefused("the URL has no host")
    addresses = host_addresses(host, parsed.port or DEFAULT_PORTS[parsed.scheme])
    refused = [ip for ip in addresses if not address_allowed(ip)]
    if refused or not addresses:
        # One bad address is enough: which one a connection would use is not ours to choose.
        raise FetchRefused(
            f"the host {host!r} resolves to {refused[0] if refused else 'nothing'}, a private, loopback or "
            "otherwise non-public address: refused"
        )
    return _Target(parsed, addresses[0])


def check_url(url: str) -> None:
    """Refuse at once what a fetch would refuse before connecting (scheme, host, addresses)."""
    _resolve(url)


def _deadline_left(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchRefused(f"fetching {url} took longer than {settings.SAFE_FETCH_TIMEOUT:g} s")
    return left


def fetch(
    url: str,
    out: BinaryIO,
    *,
    max_bytes: int,
    etag: str = "",
    last_modified: str = "",
    accept: str = "*/*",
) -> Fetched:
    """GET ``url`` under the rule above, writing the body (as sent: no content decoding) to ``out``.

    With ``etag`` / ``last_modified`` it is a conditional GET: an unchanged resource answers 304 and nothing
    is written. Raises ``FetchRefused`` for a refused URL or redirect, an answer other than 200/304, a body
    over ``max_bytes``, a timeout or a transport error; ``out`` may then hold part of the body.
    """
    deadline = time.monotonic() + settings.SAFE_FETCH_TIMEOUT
    headers = {"User-Agent": USER_AGENT, "Accept": accept, "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    # trust_env=False: no proxy from the environment (it would connect to the name, not the checked address).
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        current = url
        for _hop in range(settings.SAFE_FETCH_MAX_REDIRECTS + 1):
            target = _resolve(current)
            try:
                response = _send(client, target, headers, _deadline_left(deadline, current))
                try:
                    if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                        current = str(target.url.join(response.headers["location"]))
                        continue
                    return _receive(response, target, out, max_bytes=max_bytes, deadline=deadline)
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                raise FetchRefused(f"fetching {current} timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise FetchRefused(f"fetching {current} failed ({type(exc).__name__}: {exc})") from exc
    raise FetchRefused(f"more than {settings.SAFE_FETCH_MAX_REDIRECTS} redirects")


def _send(client: httpx.Client, target: _Target, headers: dict[str, str], left: float) -> httpx.Response:
    url = target.url
    request = client.build_request(
        "GET",
        url.copy_with(host=str(target.address)),
        # netloc: the name and a non-default port, as the URL gave them (brackets around an IPv6 literal).
        headers={**headers, "Host": url.netloc.decode("ascii")},
        timeout=httpx.Timeout(
            min(left, settings.SAFE_FETCH_CONNECT_TIMEOUT), read=min(left, settings.SAFE_FETCH_READ_TIMEOUT)
        ),
        # TLS: the name goes in the SNI and the certificate is checked against it, not against the address.
        extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
    )
    return client.send(request, stream=True)


def _receive(
    response: httpx.Response, target: _Target, out: BinaryIO, *, max_bytes: int, deadline: float
) -> Fetched:
    url = str(target.url)
    status = response.status_code
    if status not in (200, 304):
        raise FetchRefused(f"{url} answered HTTP {status}")
    size = 0
    if status == 200:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchRefused(f"{url} is {int(declared):,} bytes, over the limit of {max_bytes:,} bytes")
        for chunk in response.iter_raw(READ_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise FetchRefused(f"{url} is larger than the limit of {max_bytes:,} bytes")
            out.write(chunk)
            _deadline_left(deadline, url)
    return Fetched(
        status=status,
        url=url,
        size=size,
        etag=response.headers.get("etag", "")[:500],
        last_modified=response.headers.get("last-modified", "")[:100],
        content_type=response.headers.get("content-type", "")[:200],
        headers=dict(response.headers),
    )
