"""common.safe_fetch against a real HTTP server on loopback: the SSRF rule (switched on and off explicitly),
redirects checked hop by hop, the size and time limits, and the conditional GET."""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Callable

import pytest

from common.safe_fetch import FetchRefused, address_allowed, check_url, fetch
from tests.fixtures.feeds import FeedServer

BODY = b"id,title\nA,Alpha\n"


def test_loopback_is_refused_when_the_rule_is_on(
    feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=False)
    feed_server.serve("/feed.csv", BODY)
    out = io.BytesIO()
    for url in (
        feed_server.url("/feed.csv"),
        f"http://localhost:{feed_server.port}/feed.csv",
        f"http://[::1]:{feed_server.port}/feed.csv",
        f"http://[::ffff:127.0.0.1]:{feed_server.port}/feed.csv",
        f"http://0.0.0.0:{feed_server.port}/feed.csv",
    ):
        with pytest.raises(FetchRefused, match="non-public address: refused"):
            fetch(url, out, max_bytes=1000)
    assert feed_server.requests == [] and out.getvalue() == b""


def test_loopback_is_fetched_when_private_addresses_are_allowed(
    feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=True)
    feed_server.serve("/feed.csv", BODY)
    out = io.BytesIO()
    got = fetch(f"http://localhost:{feed_server.port}/feed.csv", out, max_bytes=1000)
    assert (got.status, got.size, out.getvalue()) == (200, len(BODY), BODY)
    # The connection went to the checked address; the server still saw the name the URL gave.
    assert feed_server.requests[0].headers["Host"] == f"localhost:{feed_server.port}"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ],
)
def test_the_address_rule(address: str, allowed: bool, fetch_rule: Callable[..., None]) -> None:
    fetch_rule(allow_private=False)
    assert address_allowed(ipaddress.ip_address(address)) is allowed


def test_allowed_networks_exempt_only_themselves(fetch_rule: Callable[..., None]) -> None:
    fetch_rule(allow_private=False, networks=("10.0.0.0/8",))
    assert address_allowed(ipaddress.ip_address("10.9.9.9"))
    assert not address_allowed(ipaddress.ip_address("192.168.0.1"))
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/feed.csv",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http:///feed.csv",
        "not a url",
    ],
)
def test_only_http_urls_with_a_host(url: str, fetch_rule: Callable[..., None]) -> None:
    fetch_rule(allow_private=True)
    with pytest.raises(FetchRefused):
        check_url(url)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/feed.csv",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/feed.csv",
        "http://10.0.0.1/feed.csv",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_a_private_address_is_refused(
    target: str, feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    # The first hop's address is exempt (the operator's own network); where it redirects is checked again.
    fetch_rule(allow_private=False, networks=("127.0.0.1/32",))
    feed_server.redirect("/feed.csv", target.format(port=feed_server.port))
    out = io.BytesIO()
    with pytest.raises(FetchRefused):
        fetch(feed_server.url("/feed.csv"), out, max_bytes=1000)
    assert [r.path for r in feed_server.requests] == ["/feed.csv"]
    assert out.getvalue() == b""


def test_redirects_are_followed_and_bounded(
    feed_server: FeedServer, fetch_rule: Callable[..., None], settings: object
) -> None:
    fetch_rule(allow_private=True)
    feed_server.redirect("/old.csv", "/new.csv", status=301)
    feed_server.serve("/new.csv", BODY)
    out = io.BytesIO()
    got = fetch(feed_server.url("/old.csv"), out, max_bytes=1000)
    assert (got.status, got.url, out.getvalue()) == (200, feed_server.url("/new.csv"), BODY)

    feed_server.redirect("/loop", "/loop")
    with pytest.raises(FetchRefused, match="more than 5 redirects"):
        fetch(feed_server.url("/loop"), io.BytesIO(), max_bytes=1000)
    assert sum(r.path == "/loop" for r in feed_server.requests) == 6


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_cut_off(
    chunked: bool, feed_server: FeedServer, fetch_rule: Callable[..., None]
) -> None:
    fetch_rule(allow_private=True)
    feed_server.serve("/big.csv", b"x" * 300_000, chunked=chunked)
    out = io.BytesIO()
    with pytest.raises(FetchRefused, match="limit of 100,000 bytes"):
        fetch(feed_server.url("/big.csv"), out, max_bytes=100_000)
    # Declared too big: nothing read; streamed: read up to the limit and no further.
    assert len(out.getvalue()) <= 100_000


def test_a_server_that_does_not_answer_times_out(
    feed_server: FeedServer, fetch_rule: Callable[..., None], settings: object
) -> None:
    fetch_rule(allow_private=True)
    settings.SAFE_FETCH_READ_TIMEOUT = 0.3  # type: ignore[attr-defined]
    feed_server.serve("/slow.csv", BODY, delay=2.0)
    with pytest.raises(FetchRefused, match="timed out"):
        fetch(feed_server.url("/slow.csv"), io.BytesIO(), max_bytes=1000)


def test_a_server_that_drips_runs_into_the_deadline(
    feed_server: FeedServer, fetch_rule: Callable[..., None], settings: object
) -> None:
    fetch_rule(allow_private=True)
    settings.SAFE_FETCH_TIMEOUT = 0.5  # type: ignore[attr-defined]
    # Each byte comes well within the read timeout; the whole body would take 5 s.
    feed_server.serve("/drip.csv", b"x" * 50, drip=0.1)
    with pytest.raises(FetchRefused, match=r"took longer than 0\.5 s"):
        fetch(feed_server.url("/drip.csv"), io.BytesIO(), max_bytes=1000)


def test_http_errors_are_refused(feed_server: FeedServer, fetch_rule: Callable[..., None]) -> None:
    fetch_rule(allow_private=True)
    with pytest.raises(FetchRefused, match="answered HTTP 404"):
        fetch(feed_server.url("/missing.csv"), io.BytesIO(), max_bytes=1000)


def test_conditional_get(feed_server: FeedServer, fetch_rule: Callable[..., None]) -> None:
    fetch_rule(allow_private=True)
    modified = "Wed, 21 Oct 2026 07:28:00 GMT"
    feed_server.serve("/feed.csv", BODY, etag='"v1"', last_modified=modified)
    first = fetch(feed_server.url("/feed.csv"), io.BytesIO(), max_bytes=1000)
    assert (first.status, first.etag, first.last_modified) == (200, '"v1"', modified)

    out = io.BytesIO()
    again = fetch(feed_server.url("/feed.csv"), out, max_bytes=1000, etag='"v1"', last_modified=modified)
    assert (again.status, again.size, out.getvalue()) == (304, 0, b"")
    sent = feed_server.requests[-1].headers
    assert (sent["If-None-Match"], sent["If-Modified-Since"]) == ('"v1"', modified)

    changed = fetch(feed_server.url("/feed.csv"), io.BytesIO(), max_bytes=1000, etag='"v0"')
    assert changed.status == 200
