"""Chat socket abuse (docs/security.md, "Chat socket"): per-address limits on connections, new visitors and
messages, an address's share of the business's cap, the server's frame limit, the token budget's default.

Against a real uvicorn (the ASGI server the stack runs) and real Redis: the address the limits count is the
TCP peer, and with a configured proxy header the client address it names. Every refusal is an ``error``
frame and stores nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from messaging import ratelimits
from messaging.models import Contact, Conversation, Message
from tests.factories import BusinessFactory
from tests.fixtures.stack import AsgiServer, start_asgi

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://shop.example"
LIMITS = {
    "CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE": "4",
    "CHAT_ADDRESS_MAX_CONNECTIONS": "6",
    "CHAT_VISITOR_MAX_CONNECTIONS": "10",
    # The address's message limit comes from its share of the business's cap: 25% of 16 = 4.
    "CHAT_ADDRESS_MESSAGES_PER_MINUTE": "1000",
    "CHAT_ADDRESS_BUSINESS_SHARE_PERCENT": "25",
    "CHAT_BUSINESS_MESSAGES_PER_MINUTE": "16",
    "CHAT_VISITOR_MESSAGES_PER_MINUTE": "100",
}


def _server(stack_env: dict[str, str], stack_logs: Path, name: str, **extra: str) -> Iterator[AsgiServer]:
    env = {**stack_env, **LIMITS, **extra}
    env.pop("TRUSTED_PROXY_HEADER", None)
    env.update(extra)
    server = start_asgi(env, stack_logs / f"{name}.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(stack_env: dict[str, str], stack_logs: Path) -> Iterator[AsgiServer]:
    """No proxy configured: the TCP peer is the address; X-Forwarded-For is never read."""
    yield from _server(stack_env, stack_logs, "asgi-direct")


@pytest.fixture(scope="module")
def proxied(stack_env: dict[str, str], stack_logs: Path) -> Iterator[AsgiServer]:
    """Behind one trusted proxy that appends the client's address to X-Forwarded-For."""
    yield from _server(
        stack_env, stack_logs, "asgi-proxied", TRUSTED_PROXY_HEADER="X-Forwarded-For", TRUSTED_PROXY_HOPS="1"
    )


class Chat:
    def __init__(self, server: AsgiServer, business: Any, forwarded_for: str | None = None) -> None:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
        self.ws: ClientConnection = connect(
            f"{server.ws_url}/ws/chat/{business.widget_key}/",
            origin=ORIGIN,  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=10,
            max_size=None,
        )

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def recv(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=5))
        return frame

    def hello(self, token: str | None = None) -> dict[str, Any]:
        self.send({"type": "hello", "visitor_token": token})
        return self.recv()

    def message(self, client_id: str, text: str = "Do you have tents?") -> dict[str, Any]:
        self.send({"type": "message", "client_id": client_id, "text": text})
        return self.recv()

    def close_code(self) -> int | None:
        try:
            self.ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        raise AssertionError("the socket stayed open")

    def close(self) -> None:
        self.ws.close()


def stored() -> tuple[int, int, int]:
    return Message.objects.count(), Conversation.objects.count(), Contact.objects.count()


# --- New visitors per address ------------------------------------------------------------------------------


def test_hellos_without_a_token_from_one_address_mint_at_most_the_limit(direct: AsgiServer) -> None:
    business = BusinessFactory()
    tokens, refused = [], []
    for _ in range(12):
        chat = Chat(direct, business)
        frame = chat.hello()
        if frame["type"] == "ready":
            tokens.append(frame["visitor_token"])
            chat.close()
        else:
            refused.append((frame["code"], chat.close_code()))
    assert len(tokens) == 4
    assert refused == [("too_many_new_visitors", 4429)] * 8
    # A visitor who already has a token is not a new visitor: it still gets in.
    chat = Chat(direct, business)
    assert chat.hello(tokens[0])["visitor_token"] == tokens[0]
    chat.close()
    assert stored() == (0, 0, 0)


def test_a_forged_forwarded_for_is_ignored_when_no_proxy_is_configured(direct: AsgiServer) -> None:
    business = BusinessFactory()
    frames = []
    for n in range(8):
        chat = Chat(direct, business, forwarded_for=f"203.0.113.{n}")
        frames.append(chat.hello()["type"])
        chat.close()
    assert frames == ["ready"] * 4 + ["error"] * 4


def test_a_configured_proxy_header_gives_each_client_its_own_limit(proxied: AsgiServer) -> None:
    business = BusinessFactory()

    def hellos(forwarded_for: str, count: int) -> list[str]:
        kinds = []
        for _ in range(count):
            chat = Chat(proxied, business, forwarded_for=forwarded_for)
            kinds.append(chat.hello()["type"])
            chat.close()
        return kinds

    # The proxy appends the address it saw; what the client wrote before it (left) is not trusted.
    assert hellos("198.51.100.7", 4) == ["ready"] * 4
    assert hellos("1.2.3.4, 198.51.100.7", 1) == ["error"]
    assert hellos("198.51.100.8", 4) == ["ready"] * 4
    # IPv6 clients are counted per /64: a new address in the same network is not a new client.
    assert hellos("2001:db8:1:2::1", 4) == ["ready"] * 4
    assert hellos("2001:db8:1:2::ffff", 1) == ["error"]


# --- Connections per address --------------------------------------------------------------------------------


def test_open_sockets_per_address(direct: AsgiServer) -> None:
    business, other = BusinessFactory(), BusinessFactory()
    chats = [Chat(direct, business) for _ in range(6)]
    assert all(chat.hello()["type"] == "ready" for chat in chats[:2])
    extra = Chat(direct, business)
    frame = extra.recv()
    assert (frame["type"], frame["code"]) == ("error", "too_many_address_connections")
    assert extra.close_code() == 4429
    # Another business's chat from the same address is counted apart (tenant isolation).
    elsewhere = Chat(direct, other)
    assert elsewhere.hello()["type"] == "ready"
    # Closing one frees a slot.
    chats.pop().close()
    again = Chat(direct, business)
    assert again.hello()["type"] == "ready"
    for chat in (*chats, again, elsewhere):
        chat.close()
    assert stored() == (0, 0, 0)


# --- Messages per address and the business's cap ----------------------------------------------------------


def test_one_address_cannot_fill_the_business_cap(proxied: AsgiServer) -> None:
    business = BusinessFactory()
    attacker = Chat(proxied, business, forwarded_for="198.51.100.66")
    attacker.hello()
    kinds = [attacker.message(f"a{n}") for n in range(6)]
    assert [frame["type"] for frame in kinds[:4]] == ["message.created"] * 4
    assert [(f["type"], f["code"], f["client_id"]) for f in kinds[4:]] == [
        ("error", "address_rate_limited", "a4"),
        ("error", "address_rate_limited", "a5"),
    ]
    # A second visitor from the same address shares the address's limit.
    second = Chat(proxied, business, forwarded_for="198.51.100.66")
    second.hello()
    assert second.message("s1")["code"] == "address_rate_limited"
    assert Message.objects.count() == 4
    # A customer elsewhere still gets through: the attacker could not fill the business's 16.
    customer = Chat(proxied, business, forwarded_for="192.0.2.10")
    customer.hello()
    assert customer.message("c1")["type"] == "message.created"
    assert Message.objects.count() == 5
    for chat in (attacker, second, customer):
        chat.close()


def test_a_business_filled_by_many_addresses_does_not_limit_another_business(proxied: AsgiServer) -> None:
    target, bystander = BusinessFactory(), BusinessFactory()
    chats = []
    for n in range(4):
        chat = Chat(proxied, target, forwarded_for=f"198.51.100.{n}")
        chat.hello()
        assert [chat.message(f"m{n}-{i}")["type"] for i in range(4)] == ["message.created"] * 4
        chats.append(chat)
    late = Chat(proxied, target, forwarded_for="192.0.2.50")
    late.hello()
    assert late.message("late")["code"] == "business_rate_limited"
    assert Message.objects.filter(business=target).count() == 16
    # The same addresses at another business: its own cap and its own per-address counts.
    for n in range(4):
        chat = Chat(proxied, bystander, forwarded_for=f"198.51.100.{n}")
        chat.hello()
        assert chat.message(f"b{n}")["type"] == "message.created"
        chats.append(chat)
    assert Message.objects.filter(business=bystander).count() == 4
    for chat in (*chats, late):
        chat.close()


# --- Frames --------------------------------------------------------------------------------------------------


def test_a_huge_frame_is_refused_by_the_server_before_the_app(direct: AsgiServer) -> None:
    business = BusinessFactory()
    chat = Chat(direct, business)
    chat.hello()
    # Over the application's limit but under the server's: an error frame, the socket stays open.
    chat.send({"type": "message", "client_id": "big", "text": "x" * 20_000})
    assert chat.recv()["code"] == "too_large"
    assert chat.message("small")["type"] == "message.created"
    # Over the server's frame limit (64 KiB): closed with 1009 (message too big) before any parsing.
    chat.send({"type": "message", "client_id": "huge", "text": "x" * (1024 * 1024)})
    assert chat.close_code() == 1009
    assert Message.objects.count() == 1
    assert "Exception" not in direct.log()


# --- Client addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "hops", "headers", "peer", "expected"),
    [
        ("", 1, [(b"x-forwarded-for", b"203.0.113.9")], "10.0.0.1", "10.0.0.1"),  # not configured
        ("X-Forwarded-For", 1, [(b"x-forwarded-for", b"203.0.113.9")], "10.0.0.1", "203.0.113.9"),
        ("X-Forwarded-For", 1, [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")], "10.0.0.1", "203.0.113.9"),
        (
            "X-Forwarded-For",
            2,
            [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.0.0.2")],
            "10.0.0.1",
            "203.0.113.9",
        ),
        # Two header lines are one list, in order.
        (
            "X-Forwarded-For",
            2,
            [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"), (b"x-forwarded-for", b"10.0.0.2")],
            "10.0.0.1",
            "203.0.113.9",
        ),
        # Fewer entries than trusted hops, a missing header, garbage: the peer, never a client's claim.
        ("X-Forwarded-For", 2, [(b"x-forwarded-for", b"203.0.113.9")], "10.0.0.1", "10.0.0.1"),
        ("X-Forwarded-For", 1, [], "10.0.0.1", "10.0.0.1"),
        ("X-Forwarded-For", 1, [(b"x-forwarded-for", b"not-an-address")], "10.0.0.1", "10.0.0.1"),
        ("X-Real-IP", 1, [(b"x-real-ip", b"::ffff:203.0.113.9")], "10.0.0.1", "203.0.113.9"),
        ("", 1, [], "2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
    ],
)
def test_client_address(
    settings: Any, header: str, hops: int, headers: list[tuple[bytes, bytes]], peer: str, expected: str
) -> None:
    settings.TRUSTED_PROXY_HEADER = header
    settings.TRUSTED_PROXY_HOPS = hops
    assert ratelimits.client_address({"headers": headers, "client": (peer, 4321)}) == expected


def test_no_known_address_without_a_peer(settings: Any) -> None:
    # A unix socket without a configured proxy header: there is no address to count.
    assert ratelimits.client_address({"headers": [], "client": None}) is None


def test_the_address_message_limit_is_a_share_of_the_business_cap(settings: Any) -> None:
    settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE = 600
    settings.CHAT_ADDRESS_MESSAGES_PER_MINUTE = 60
    settings.CHAT_ADDRESS_BUSINESS_SHARE_PERCENT = 25
    assert ratelimits.address_message_limit() == 60
    settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE = 100
    assert ratelimits.address_message_limit() == 25
    settings.CHAT_BUSINESS_MESSAGES_PER_MINUTE = 2
    assert ratelimits.address_message_limit() == 1  # never 0, and never the whole cap above 1


# --- Defaults ------------------------------------------------------------------------------------------------


def test_defaults_bound_an_unconfigured_deployment() -> None:
    names = [
        "LLAMA_BUSINESS_TOKEN_BUDGET",
        "LLAMA_BUSINESS_BUDGET_WINDOW",
        "WS_MAX_MESSAGE_BYTES",
        "TRUSTED_PROXY_HEADER",
        "CHAT_ADDRESS_MAX_CONNECTIONS",
        "CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE",
        "CHAT_ADDRESS_MESSAGES_PER_MINUTE",
        "CHAT_ADDRESS_BUSINESS_SHARE_PERCENT",
    ]
    env = {k: v for k, v in os.environ.items() if k not in names}
    code = (
        "from django.conf import settings; import json; print(json.dumps([getattr(settings, n) for n in %r]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code % names],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [200_000, 3600, 65536, "", 20, 10, 60, 10]
