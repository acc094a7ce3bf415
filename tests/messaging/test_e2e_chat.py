"""End to end: websocket client -> real uvicorn -> Postgres -> Redis broker -> real Celery worker -> test
inference server -> channel layer -> websocket. See tests/fixtures/stack.py."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

import pytest
from django.test.client import MULTIPART_CONTENT
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from messaging.models import Conversation, Message, MessageMedia
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.media import JPEG
from tests.fixtures.uploads import photo_form, stack_media_path

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = "https://shop.example"


class Client:
    def __init__(self, url: str, origin: str = ORIGIN) -> None:
        self.ws: ClientConnection = connect(url, origin=origin, open_timeout=10)  # type: ignore[arg-type]
        self.frames: list[dict[str, Any]] = []

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = json.loads(self.ws.recv(timeout=timeout))
        self.frames.append(frame)
        return frame

    def until(self, kind: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame

    def hello(self, **fields: Any) -> dict[str, Any]:
        self.send(type="hello", **fields)
        return self.until("ready")

    def deltas(self, message_id: int) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "delta" and f["message_id"] == message_id]

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def _reply_of(customer_id: int, timeout: float = 15.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = (
            Message.objects.filter(reply_to_id=customer_id).exclude(status=Message.Status.STREAMING).first()
        )
        if reply is not None:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"no finished reply to {customer_id}")


TENT_FACTS = "Ridgeline 2-person tent: 249.00 EUR, in stock."
# Sentences the model adds to an answer: they pass the checks (no price, number or product of their own).
CHATTY = " ".join(["Camping is more fun with good gear."] * 40)


def test_full_streamed_conversation(stack: Any, shop: Any) -> None:
    stack.inference.script("Great for a weekend in the hills.")
    answer = f"{TENT_FACTS} Great for a weekend in the hills."
    client = Client(stack.chat_url(shop))
    ready = client.hello()
    assert ready["conversation_id"] is None
    assert ready["history"] == []
    assert ready["agent"]["name"] == f"{shop.name} assistant"
    client.send(type="message", client_id="c1", text="How much is the tent?")
    created = client.until("message.created")
    assert created["message"]["role"] == "customer"
    assert created["message"]["client_id"] == "c1"
    reply_created = client.until("message.created")
    assert reply_created["message"]["role"] == "agent"
    reply_id = reply_created["message"]["id"]
    done = client.until("message.done", message_id=reply_id)
    deltas = client.deltas(reply_id)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d["text"] for d in deltas) == answer
    assert done["text"] == answer
    assert done["status"] == "done"
    # The customer gets what the customer reads: the checks and timings stay on the stored reply.
    assert set(done) == {"type", "message_id", "text", "status", "cards"}
    assert [card["external_id"] for card in done["cards"]] == ["TENT-2P"]
    assert done["cards"][0]["price"] == "249.00"
    client.close()

    reply = Message.objects.get(pk=reply_id)
    assert (reply.role, reply.status, reply.text) == ("agent", "done", answer)
    assert reply.usage["completion_tokens"] == 7  # the model's seven words
    assert {"queue_wait", "retrieval", "prompt", "first_token", "total"} <= set(reply.timings)
    assert "TENT-2P" in [c["external_id"] for c in reply.citations]
    customer = Message.objects.get(pk=created["message"]["id"])
    assert customer.status == "answered"
    # The catalog was quoted as data in the prompt the model got.
    system = stack.inference.requests[-1].body["messages"][0]["content"]
    assert "[item:" in system and '"Ridgeline 2-person tent"' in system

    # Reconnect with the token: history, same conversation.
    again = Client(stack.chat_url(shop))
    ready2 = again.hello(visitor_token=ready["visitor_token"])
    assert ready2["conversation_id"] == reply.conversation_id
    assert [(m["role"], m["text"]) for m in ready2["history"]] == [
        ("customer", "How much is the tent?"),
        ("agent", answer),
    ]
    again.close()


def post_photo(stack: Any, business: Any, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """The widget's photo upload over real HTTP to the stack's uvicorn (docs/widget.md, "Photos")."""
    request = urllib.request.Request(
        f"{stack.asgi.url}/api/widget/{business.widget_key}/uploads",
        data=body,
        method="POST",
        headers={"Content-Type": MULTIPART_CONTENT, "Origin": ORIGIN, "X-Bizagent-Visitor": token},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_a_photo_uploaded_over_http_is_described_and_answered_on_the_socket(
    stack: Any, shop: Any, stack_env: dict[str, str]
) -> None:
    # The stack's pool accepts images: the test server describes the photo, then the reply is streamed.
    stack.inference.image_reply = "A green two-person dome tent with two doors."
    chatty = "Great for a weekend in the hills."
    stack.inference.script(chatty)
    client = Client(stack.chat_url(shop))
    ready = client.hello()
    assert ready["conversation_id"] is None  # the photo is the visitor's first message
    status, answer = post_photo(stack, shop, ready["visitor_token"], photo_form(client_message_id="ph-1"))
    assert status == 202
    photo = answer["message"]
    assert (photo["role"], photo["status"], photo["text"], photo["client_id"]) == (
        "customer",
        "preparing",
        "[image]",
        "ph-1",
    )
    # The socket is told of it, joins its conversation, and gets the reply streamed.
    assert client.until("message.created") == {"type": "message.created", "message": photo}
    reply_created = client.until("message.created")
    assert (reply_created["message"]["role"], reply_created["message"]["conversation_id"]) == (
        "agent",
        photo["conversation_id"],
    )
    reply_id = reply_created["message"]["id"]
    done = client.until("message.done", message_id=reply_id)
    deltas = client.deltas(reply_id)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert done["status"] == "done"
    # The answer cites the catalog's row (what the photo asks about: the item and its description), then the
    # model's words.
    answer = f"{TENT_FACTS} Freestanding three-season tent with two doors and vestibules. {chatty}"
    assert done["text"] == "".join(d["text"] for d in deltas) == answer
    assert [card["external_id"] for card in done["cards"]] == ["TENT-2P"]
    client.close()

    assert stack.inference.image_requests == 1
    customer = Message.objects.get(pk=photo["id"])
    assert (customer.status, customer.text) == (
        "answered",
        "Do you have this? My photo shows: A green two-person dome tent with two doors.",
    )
    media = MessageMedia.objects.get(message=customer)
    assert (media.state, media.description) == ("read", "A green two-person dome tent with two doors.")
    # Stored by the stack's server under the business's folder, read there by its worker.
    stored = stack_media_path(stack_env, media.file.name)
    assert media.file.name.startswith(f"messages/{shop.pk}/")
    assert stored.read_bytes() == JPEG
    stored.unlink()


def test_a_wrong_price_from_the_model_is_never_shown(stack: Any, shop: Any) -> None:
    stack.inference.script("The Pocket gas stove is only 19.90 EUR.")
    client = Client(stack.chat_url(shop))
    client.hello()
    client.send(type="message", client_id="c1", text="price of the gas stove?")
    done = client.until("message.done")
    assert done["text"] == "Pocket gas stove: 39.90 EUR, in stock."
    assert "19.90" not in "".join(d["text"] for d in client.deltas(done["message_id"]))
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.grounding["ok"] is True
    assert reply.grounding["dropped"] == [
        {"sentence": "The Pocket gas stove is only 19.90 EUR.", "reason": "wrong_price"}
    ]
    assert reply.text == "Pocket gas stove: 39.90 EUR, in stock."
    client.close()


def test_resume_after_dropped_socket_mid_reply(stack: Any, shop: Any) -> None:
    answer = f"{TENT_FACTS} {CHATTY}"
    stack.inference.script(CHATTY)
    stack.inference.token_delay = 0.03
    first = Client(stack.chat_url(shop))
    ready = first.hello()
    first.send(type="message", client_id="c1", text="tell me about tents")
    reply_id = None
    while reply_id is None:
        frame = first.recv()
        if frame["type"] == "message.created" and frame["message"]["role"] == "agent":
            reply_id = frame["message"]["id"]
    while len(first.deltas(reply_id)) < 3:
        first.recv()
    seen = first.deltas(reply_id)
    first.close()  # dropped mid-reply
    time.sleep(0.2)
    second = Client(stack.chat_url(shop))
    second.hello(
        visitor_token=ready["visitor_token"],
        conversation_id=seen and Message.objects.get(pk=reply_id).conversation_id,
        last_seq={str(reply_id): seen[-1]["seq"]},
    )
    done = second.until("message.done", message_id=reply_id)
    rest = second.deltas(reply_id)
    seqs = [d["seq"] for d in seen] + [d["seq"] for d in rest]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
    assert "".join(d["text"] for d in seen + rest) == answer
    assert done["text"] == answer
    second.close()


def long_reply_under_way(stack: Any, shop: Any, *, token_delay: float) -> tuple[Client, Message, Message]:
    """A customer question whose reply streams long (the composed answer, then ``CHATTY``), once its worker
    has claimed it and streamed past the answer: (the client, the customer message, the reply row)."""
    stack.inference.script(CHATTY)
    stack.inference.token_delay = token_delay
    client = Client(stack.chat_url(shop))
    client.hello()
    client.send(type="message", client_id="c1", text="tell me everything about tents")
    customer_id = client.until("message.created")["message"]["id"]
    deadline = time.monotonic() + 15
    while True:
        customer = Message.objects.get(pk=customer_id)
        reply = Message.objects.filter(reply_to_id=customer_id).first()
        if customer.claimed_by and reply is not None and len(reply.text) > len(TENT_FACTS) + 20:
            return client, customer, reply
        assert time.monotonic() < deadline, "the reply did not start"
        time.sleep(0.05)


def test_worker_sigkill_mid_reply_yields_exactly_one_complete_reply(stack: Any, shop: Any) -> None:
    answer = f"{TENT_FACTS} {CHATTY}"
    client, customer, _reply = long_reply_under_way(stack, shop, token_delay=0.03)
    customer_id = customer.pk
    pid = int(customer.claimed_by.split(":")[1])
    assert pid in stack.worker.child_pids()
    os.kill(pid, signal.SIGKILL)
    done = client.until("message.done", timeout=30)
    assert done["text"] == answer
    assert done["status"] == "done"
    time.sleep(1.0)
    replies = Message.objects.filter(conversation_id=customer.conversation_id, role="agent")
    assert [(r.status, r.text) for r in replies] == [("done", answer)]
    assert Message.objects.get(pk=customer_id).status == "answered"
    client.close()


def test_inference_failure_before_first_token_is_invisible(stack: Any, shop: Any) -> None:
    stack.inference.script("Need a gas canister too?")
    stack.inference.fault("status", status=500, times=1)
    client = Client(stack.chat_url(shop))
    client.hello()
    client.send(type="message", client_id="c1", text="stove price?")
    done = client.until("message.done")
    assert done["status"] == "done"
    assert done["text"] == "Pocket gas stove: 39.90 EUR, in stock. Need a gas canister too?"
    assert [f for f in client.frames if f["type"] == "error"] == []
    assert stack.inference.chat_requests == 2
    client.close()


def test_stop_cancels_upstream_generation(stack: Any, shop: Any) -> None:
    stack.inference.script(" ".join(f"w{i}" for i in range(400)))
    stack.inference.token_delay = 0.02
    client = Client(stack.chat_url(shop))
    client.hello()
    client.send(type="message", client_id="c1", text="tents?")
    while not any(f["type"] == "delta" for f in client.frames):
        client.recv()
    # The answer from the data comes first; the model's words are on their way.
    assert stack.inference.wait_for(lambda: stack.inference.active_streams == 1, timeout=5)
    stopped_at = time.monotonic()
    client.send(type="stop")
    assert stack.inference.wait_for(lambda: stack.inference.active_streams == 0, timeout=2)
    elapsed = time.monotonic() - stopped_at
    assert elapsed < 0.1 + 0.05  # 100 ms budget, plus the poll step of wait_for
    done = client.until("message.done")
    assert done["status"] == "cut"
    assert stack.inference.aborted_streams == 1
    reply = Message.objects.get(pk=done["message_id"])
    assert (reply.status, reply.error) == ("cut", "stopped by the customer")
    assert done["text"] == reply.text == TENT_FACTS
    client.close()


def test_handoff_then_silence_then_staff_reply(stack: Any, shop: Any) -> None:
    from messaging.services import staff_reply_send

    client = Client(stack.chat_url(shop))
    client.hello()
    client.send(type="message", client_id="c1", text="I want to talk to a human please")
    handoff = client.until("handoff")
    assert handoff["state"] == "human"
    conversation = Conversation.objects.get(business=shop)
    assert conversation.state == "human"
    said = client.until("message.done")
    assert said["text"] == "I'm connecting you with a member of our team. They'll reply here shortly."
    assert stack.inference.chat_requests == 0
    client.send(type="message", client_id="c2", text="hello?")
    created = client.until("message.created")
    assert created["message"]["status"] == "skipped"
    staff_reply_send(business=shop, conversation_id=conversation.pk, user=None, text="Hi, Anna here.")
    staff = client.until("message.created")
    assert (staff["message"]["role"], staff["message"]["text"]) == ("staff", "Hi, Anna here.")
    time.sleep(0.5)
    assert stack.inference.chat_requests == 0
    assert list(Message.objects.filter(conversation=conversation).values_list("role", flat=True)) == [
        "customer",
        "agent",
        "customer",
        "staff",
    ]
    client.close()


def test_origin_rejected_and_nothing_stored(stack: Any, shop: Any) -> None:
    client = Client(stack.chat_url(shop), origin="https://evil.example")
    frame = client.recv()
    assert frame == {
        "type": "error",
        "code": "origin_not_allowed",
        "detail": "Origin https://evil.example may not open this chat.",
    }
    with pytest.raises(ConnectionClosed) as closed:
        client.send(type="hello")
        client.send(type="message", client_id="x", text="hi")
        client.recv(timeout=2)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0


def test_burst_duplicate_and_isolation(stack: Any, shop: Any) -> None:
    stack.inference.script("Here you go.")
    alice = Client(stack.chat_url(shop))
    ready_a = alice.hello()
    alice.send(type="message", client_id="a1", text="hi")
    alice.until("message.done")
    alice.send(type="message", client_id="a1", text="hi")  # a resend after a reconnect
    again = alice.until("message.created")
    assert again["message"]["client_id"] == "a1"
    assert Message.objects.filter(client_message_id="a1").count() == 1
    conversation_a = ready_a and Message.objects.get(client_message_id="a1").conversation_id
    # Another visitor cannot read Alice's conversation.
    bob = Client(stack.chat_url(shop))
    bob.send(type="hello", conversation_id=conversation_a)
    error = bob.until("error")
    assert error["code"] == "conversation_not_found"
    ready_b = bob.until("ready")
    assert (ready_b["conversation_id"], ready_b["history"]) == (None, [])
    alice.close()
    bob.close()
