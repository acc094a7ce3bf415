"""messaging.services and the reply task's core (run in this process against the test inference server):
idempotent intake, exactly-once replies, bursts, human state, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from messaging import selectors
from messaging.models import Conversation, Message
from messaging.replies.engine import run_reply
from messaging.services import conversation_hand_back, conversation_handoff, message_receive, staff_reply_send
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def receive(business: Any, text: str, **kwargs: Any) -> Message | None:
    kwargs.setdefault("channel", "whatsapp")
    kwargs.setdefault("contact_external_id", "4915550001")
    return message_receive(business=business, text=text, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_duplicate_channel_and_client_ids_are_stored_once() -> None:
    business = BusinessFactory()
    first = receive(business, "hi", channel_message_id="wamid.1")
    assert first is not None
    assert receive(business, "hi", channel_message_id="wamid.1") is None
    widget = receive(business, "hey", channel="widget", contact_external_id="v1", client_message_id="c1")
    assert widget is not None
    assert (
        receive(business, "hey", channel="widget", contact_external_id="v1", client_message_id="c1") is None
    )
    assert Message.objects.count() == 2
    assert Conversation.objects.count() == 2
    conversation = Conversation.objects.get(channel="whatsapp")
    assert conversation.last_customer_message_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_known_open_conversation_takes_the_message_directly_and_anything_else_falls_back() -> None:
    business, other = BusinessFactory(), BusinessFactory()
    widget = {"channel": "widget", "contact_external_id": "v1"}
    first = receive(business, "hi", client_message_id="c1", **widget)
    assert first is not None
    conversation = first.conversation_id
    # The socket's conversation: stored in it, a duplicate client id stored once.
    noted = Conversation.objects.get(pk=conversation).last_customer_message_at
    second = receive(business, "and?", client_message_id="c2", conversation_id=conversation, **widget)
    assert second is not None and second.conversation_id == conversation and second.status == "received"
    # The same statement notes when the customer last wrote.
    assert noted is not None and Conversation.objects.get(pk=conversation).last_customer_message_at > noted
    assert receive(business, "and?", client_message_id="c2", conversation_id=conversation, **widget) is None
    # Another visitor's conversation id, or another business's, is never written into: the caller's own
    # conversation is looked up as if no id had been given.
    stranger = receive(
        business,
        "me",
        client_message_id="s1",
        conversation_id=conversation,
        channel="widget",
        contact_external_id="v2",
    )
    assert stranger is not None and stranger.conversation_id != conversation
    elsewhere = receive(other, "hi", client_message_id="c3", conversation_id=conversation, **widget)
    assert (
        elsewhere is not None
        and elsewhere.business_id == other.pk
        and elsewhere.conversation_id != conversation
    )
    # A closed conversation is not reopened: a new one starts.
    Conversation.objects.filter(pk=conversation).update(state=Conversation.State.CLOSED)
    after = receive(business, "back", client_message_id="c4", conversation_id=conversation, **widget)
    assert after is not None and after.conversation_id not in (conversation, stranger.conversation_id)
    # In human state it is stored skipped (staff answer), in the same conversation.
    Conversation.objects.filter(pk=after.conversation_id).update(state=Conversation.State.HUMAN)
    quiet = receive(
        business, "hello?", client_message_id="c5", conversation_id=after.conversation_id, **widget
    )
    assert quiet is not None and quiet.status == "skipped" and quiet.conversation_id == after.conversation_id
    assert Conversation.objects.get(pk=conversation).messages.count() == 2
    assert Message.objects.filter(business=other).count() == 1


@pytest.mark.django_db(transaction=True)
def test_reply_runs_once_even_when_the_task_runs_twice(pool_server: Any, shop: Any) -> None:
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    message = receive(shop, "stove?")
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    assert async_to_sync(run_reply)(message.pk) == "answered"
    replies = Message.objects.filter(role="agent")
    # The model only said the price again: the answer is the row's, once.
    assert [(r.text, r.status, r.reply_to_id) for r in replies] == [
        ("Pocket gas stove: 39.90 EUR, in stock.", "done", message.pk)
    ]
    assert replies[0].delivery == "queued"  # a messaging channel: the outbound sender takes it from here
    assert pool_server.chat_requests == 1


@pytest.mark.django_db(transaction=True)
def test_a_burst_gets_one_answer_to_all_of_it(pool_server: Any, shop: Any) -> None:
    pool_server.script("Yes, the Pocket gas stove is in stock.")
    burst = [receive(shop, text) for text in ("hi", "do you have stoves", "in stock?")]
    outcomes = [async_to_sync(run_reply)(m.pk) for m in burst if m is not None]
    assert outcomes == ["answered", "answered", "done"]
    assert pool_server.chat_requests == 1
    assert pool_server.requests[-1].body["messages"][-1]["content"] == "hi\ndo you have stoves\nin stock?"
    assert (
        sorted(Message.objects.filter(role="customer").values_list("status", flat=True)) == ["answered"] * 3
    )
    assert Message.objects.filter(role="agent").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_tasks_one_trip_claim_writes_nothing_when_it_may_not_claim(pool_server: Any, shop: Any) -> None:
    # As the real task runs it (with its conversation): a burst's older message, a conversation with staff
    # and another conversation's id are declined without a claim or a reply row.
    pool_server.script("Yes, the Pocket gas stove is in stock.")
    older, newer = receive(shop, "hi"), receive(shop, "stoves?")
    assert older is not None and newer is not None
    conversation = older.conversation_id
    assert async_to_sync(run_reply)(older.pk, conversation_id=conversation) == "answered"
    elsewhere = receive(shop, "hello", contact_external_id="4915550002")
    assert elsewhere is not None
    # The wrong conversation's id: the message is claimed in its own conversation, never in that one.
    assert async_to_sync(run_reply)(elsewhere.pk, conversation_id=conversation) == "done"
    assert Message.objects.get(role="agent", reply_to=elsewhere).conversation_id == elsewhere.conversation_id
    conversation_handoff(business=shop, conversation_id=conversation, reason="staff took over")
    assert async_to_sync(run_reply)(newer.pk, conversation_id=conversation) == "human"
    assert Message.objects.filter(conversation_id=conversation, role="agent").count() == 0
    assert list(
        Message.objects.filter(conversation_id=conversation)
        .values_list("claimed_at", "status")
        .order_by("pk")
    ) == [(None, "received"), (None, "skipped")]
    assert pool_server.chat_requests == 1


@pytest.mark.django_db(transaction=True)
def test_a_live_claim_makes_a_second_task_wait(pool_server: Any, shop: Any) -> None:
    message = receive(shop, "stove?")
    assert message is not None
    # Another live process on this host holds the claim (our own pid: alive).
    import os
    import socket

    from django.utils import timezone

    Message.objects.filter(pk=message.pk).update(
        claimed_at=timezone.now(), claimed_by=f"{socket.gethostname()}:{os.getpid()}:other"
    )
    assert async_to_sync(run_reply)(message.pk) == "busy"
    assert Message.objects.filter(role="agent").count() == 0
    # A dead process's claim is taken over at once.
    Message.objects.filter(pk=message.pk).update(claimed_by=f"{socket.gethostname()}:999999:dead")
    assert async_to_sync(run_reply)(message.pk) == "done"


@pytest.mark.django_db(transaction=True)
def test_human_state_keeps_the_agent_silent(pool_server: Any, shop: Any) -> None:
    first = receive(shop, "hello")
    assert first is not None
    conversation_handoff(business=shop, conversation_id=first.conversation_id, reason="staff took over")
    second = receive(shop, "anyone?")
    assert second is not None and second.status == "skipped"
    assert async_to_sync(run_reply)(first.pk) == "human"
    assert pool_server.chat_requests == 0
    staff = staff_reply_send(business=shop, conversation_id=first.conversation_id, user=None, text="Hi!")
    assert staff is not None and staff.delivery == "queued"
    conversation_hand_back(business=shop, conversation_id=first.conversation_id)
    assert Conversation.objects.get(pk=first.conversation_id).state == "bot"


@pytest.mark.django_db(transaction=True)
def test_handoff_keyword_switches_to_human(pool_server: Any, shop: Any) -> None:
    message = receive(shop, "can I speak to customer service")
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "handoff"
    conversation = Conversation.objects.get(pk=message.conversation_id)
    assert (conversation.state, conversation.handoff_reason) == (
        "human",
        "customer asked for a person ('customer service')",
    )
    assert pool_server.chat_requests == 0


@pytest.mark.django_db(transaction=True)
def test_tenant_isolation(pool_server: Any, shop: Any) -> None:
    other = BusinessFactory()
    message = receive(
        shop, "hello", channel="widget", contact_external_id="visitor-a", client_message_id="c1"
    )
    assert message is not None
    conversation_id = message.conversation_id
    # Business B sees nothing of A's conversation and cannot change it.
    assert selectors.conversation_history(other, conversation_id) == []
    assert list(selectors.conversations_list(other)) == []
    assert staff_reply_send(business=other, conversation_id=conversation_id, user=None, text="x") is None
    assert conversation_handoff(business=other, conversation_id=conversation_id, reason="x") is None
    assert Conversation.objects.get(pk=conversation_id).state == "bot"
    assert Message.objects.filter(conversation_id=conversation_id).count() == 1
    # Another visitor of the same business sees nothing either.
    assert selectors.conversation_history(shop, conversation_id, "visitor-b") == []
    assert selectors.visitor_conversation(shop, "visitor-b", conversation_id) is None
    assert [m.pk for m in selectors.conversation_history(shop, conversation_id, "visitor-a")] == [message.pk]


@pytest.mark.django_db(transaction=True)
def test_repeated_failures_hand_the_conversation_to_a_person(pool_server: Any, shop: Any) -> None:
    from agents.selectors import agent_for

    agent = agent_for(shop)
    agent.handoff_after_failures = 2
    agent.save()
    for text in ("do you sell pizza?", "any fresh bread?"):  # nothing in the catalog answers these
        message = receive(shop, text)
        assert message is not None
        assert async_to_sync(run_reply)(message.pk) == "done"
        assert Message.objects.get(reply_to=message).text == agent.no_results_message
    third = receive(shop, "lamp?")
    assert third is not None
    assert async_to_sync(run_reply)(third.pk) == "handoff"
    assert Conversation.objects.get(pk=third.conversation_id).handoff_reason == "2 failed replies in a row"


@pytest.mark.django_db(transaction=True)
def test_a_pool_that_fails_leaves_the_answer_from_the_data(pool_server: Any, shop: Any) -> None:
    pool_server.fault("status", status=500)  # every try fails: the customer still gets the catalog's answer
    message = receive(shop, "how much is the stove?")
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    reply = Message.objects.get(reply_to=message)
    assert (reply.status, reply.text) == ("done", "Pocket gas stove: 39.90 EUR, in stock.")
    assert "PoolUnavailable" in reply.grounding["model_error"]


@pytest.mark.django_db(transaction=True)
def test_a_stop_asked_before_the_stream_starts_cuts_the_reply(pool_server: Any, shop: Any) -> None:
    from messaging import streams

    pool_server.script(" ".join(f"w{i}" for i in range(200)))
    message = receive(shop, "tents?")
    assert message is not None
    # The reply row is the next message stored; its stop is asked before the task runs (the watch of the
    # worker's loop never hears that publish: the key left behind stops it).
    async_to_sync(streams.cancel_request)(message.pk + 1)
    assert async_to_sync(run_reply)(message.pk) == "stopped"
    reply = Message.objects.get(reply_to=message)
    assert (reply.pk, reply.status, reply.error) == (message.pk + 1, "cut", "stopped by the customer")
    assert len(reply.text) < len(" ".join(f"w{i}" for i in range(200)))
