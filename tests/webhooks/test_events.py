"""Each event type is written by the service that makes the change, in its transaction, with its payload;
and only for a business with an endpoint listening to it."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from businesses.models import Business
from messaging.models import Channel, Message
from messaging.replies.engine import run_reply
from messaging.services import (
    conversation_close,
    conversation_csat,
    conversation_handoff,
    message_rate,
    message_receive,
    staff_reply_send,
)
from outbox.models import EventType, OutboxEvent
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from webhooks.services import endpoint_create

ALL_EVENTS = [t.value for t in EventType if t != EventType.TEST]


def listening(events: list[str] | None = None) -> Business:
    business = BusinessFactory()
    endpoint_create(business=business, url="http://127.0.0.1:9/hooks", events=events or ALL_EVENTS)
    return business


def events(business: Business) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.type, e.ordering_key, e.payload)
        for e in OutboxEvent.objects.filter(business=business).order_by("pk")
    ]


@pytest.mark.django_db
def test_a_conversation_life_emits_its_events_in_order() -> None:
    business = listening()
    first = message_receive(business=business, channel=Channel.WIDGET, contact_external_id="v1", text="hi")
    assert first is not None
    conversation_id = first.conversation_id
    # The socket's known conversation: the one-statement path.
    second = message_receive(
        business=business,
        channel=Channel.WIDGET,
        contact_external_id="v1",
        text="more",
        conversation_id=conversation_id,
    )
    assert second is not None
    staff = staff_reply_send(
        business=business, conversation_id=conversation_id, user=None, text="A person here"
    )
    assert staff is not None
    conversation_handoff(business=business, conversation_id=conversation_id, reason="asked for a person")
    conversation_close(business=business, conversation_id=conversation_id)
    conversation_csat(business=business, visitor_id="v1", conversation_id=conversation_id, score=4)

    key = f"conversation:{conversation_id}"
    contact_id = first.conversation.contact_id
    got = events(business)
    assert [(t, k) for t, k, _ in got] == [
        ("conversation.created", key),
        ("message.created", key),
        ("message.created", key),
        ("message.created", key),
        # staff_reply_send already moved it to human: the takeover changes nothing, and emits nothing.
        ("conversation.closed", key),
        ("feedback.received", key),
    ]
    assert got[0][2] == {
        "conversation_id": conversation_id,
        "channel": "widget",
        "contact_id": contact_id,
        "state": "bot",
    }
    created_at = first.created_at.isoformat().replace("+00:00", "Z")
    assert got[1][2] == {
        "conversation_id": conversation_id,
        "message_id": first.pk,
        "channel": "widget",
        "role": "customer",
        "text": "hi",
        "status": "received",
        "created_at": created_at,
    }
    assert (got[2][2]["message_id"], got[2][2]["text"]) == (second.pk, "more")
    assert (got[3][2]["role"], got[3][2]["text"]) == ("staff", "A person here")
    assert got[4][2] == {
        "conversation_id": conversation_id,
        "channel": "widget",
        "contact_id": contact_id,
        "state": "closed",
    }
    assert got[5][2] == {
        "conversation_id": conversation_id,
        "kind": "csat",
        "message_id": None,
        "rating": None,
        "score": 4,
        "comment": "",
    }


@pytest.mark.django_db
def test_a_handoff_and_a_rating_emit_theirs() -> None:
    business = listening(["handoff.requested", "feedback.received"])
    message = message_receive(business=business, channel=Channel.WIDGET, contact_external_id="v1", text="hi")
    assert message is not None
    conversation_handoff(
        business=business, conversation_id=message.conversation_id, reason="asked for a person"
    )
    conversation_handoff(
        business=business, conversation_id=message.conversation_id, reason="again"
    )  # no change
    reply = Message.objects.create(
        business=business,
        conversation_id=message.conversation_id,
        channel=Channel.WIDGET,
        role=Message.Role.AGENT,
        text="The stove is 39.90 EUR.",
        status=Message.Status.DONE,
    )
    message_rate(
        business=business, visitor_id="v1", message_id=reply.pk, rating="down", comment=" wrong price "
    )
    message_rate(business=business, visitor_id="someone-else", message_id=reply.pk, rating="up")  # refused
    key = f"conversation:{message.conversation_id}"
    assert events(business) == [
        (
            "handoff.requested",
            key,
            {"conversation_id": message.conversation_id, "channel": "widget", "reason": "asked for a person"},
        ),
        (
            "feedback.received",
            key,
            {
                "conversation_id": message.conversation_id,
                "kind": "rating",
                "message_id": reply.pk,
                "rating": "down",
                "score": None,
                "comment": "wrong price",
            },
        ),
    ]


@pytest.mark.django_db
def test_an_import_emits_import_finished_whether_it_succeeds_or_fails(import_catalog: Any) -> None:
    business = listening(["import.finished"])
    done = import_catalog(business, SMALL_CATALOG_CSV)
    failed = import_catalog(business, "not,a\ncatalog", filename="broken.json")
    (_, key, succeeded), (_, _, refused) = events(business)
    assert key == ""
    assert succeeded == {
        "import_id": done.pk,
        "state": "succeeded",
        "mode": "upsert",
        "original_filename": "catalog.csv",
        "created": done.created_count,
        "updated": 0,
        "unchanged": 0,
        "retired": 0,
        "failed": 0,
        "error": "",
    }
    assert done.created_count > 0
    assert (refused["import_id"], refused["state"]) == (failed.pk, "failed")
    assert refused["error"] == failed.error_message != ""


@pytest.mark.django_db(transaction=True)
def test_the_agents_reply_emits_message_created(pool_server: Any, import_catalog: Any) -> None:
    business = listening(["message.created"])
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    message = message_receive(
        business=business, channel=Channel.WHATSAPP, contact_external_id="4915", text="stove?"
    )
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    reply = Message.objects.get(role="agent")
    assert [(p["role"], p["message_id"], p["text"], p["status"]) for _, _, p in events(business)] == [
        ("customer", message.pk, "stove?", "received"),
        ("agent", reply.pk, "Pocket gas stove: 39.90 EUR, in stock.", "done"),
    ]


@pytest.mark.django_db
def test_the_playground_emits_nothing_and_the_one_statement_path_reads_it_without_a_query() -> None:
    business = listening()
    first = message_receive(
        business=business, channel=Channel.WIDGET, contact_external_id="owner", text="hi", preview=True
    )
    assert first is not None and first.conversation.preview
    conversation_id = first.conversation_id
    # The socket's known conversation: the one statement, and not even the listeners' exists-check after it.
    with CaptureQueriesContext(connection) as queries:
        second = message_receive(
            business=business,
            channel=Channel.WIDGET,
            contact_external_id="owner",
            text="more",
            conversation_id=conversation_id,
        )
    assert second is not None and second.conversation_id == conversation_id
    assert [q["sql"].split()[0] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]] == ["WITH"]
    reply = Message.objects.create(
        business=business,
        conversation_id=conversation_id,
        channel=Channel.WIDGET,
        role=Message.Role.AGENT,
        text="The stove is 39.90 EUR.",
        status=Message.Status.DONE,
    )
    assert message_rate(business=business, visitor_id="owner", message_id=reply.pk, rating="up")
    conversation_handoff(business=business, conversation_id=conversation_id, reason="asked for a person")
    assert staff_reply_send(business=business, conversation_id=conversation_id, user=None, text="Hello")
    conversation_close(business=business, conversation_id=conversation_id)
    assert conversation_csat(business=business, visitor_id="owner", conversation_id=conversation_id, score=5)
    assert events(business) == []
    # A customer's conversation at the same business still reports each; on the one-statement path, the
    # statement, the listeners' exists-check and the event: no query to tell it from the playground.
    customer = message_receive(business=business, channel=Channel.WIDGET, contact_external_id="v1", text="hi")
    assert customer is not None
    with CaptureQueriesContext(connection) as queries:
        message_receive(
            business=business,
            channel=Channel.WIDGET,
            contact_external_id="v1",
            text="more",
            conversation_id=customer.conversation_id,
        )
    assert [q["sql"].split()[0] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]] == [
        "WITH",
        "SELECT",
        "INSERT",
    ]
    assert [t for t, _, _ in events(business)] == [
        "conversation.created",
        "message.created",
        "message.created",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_agents_reply_in_the_playground_emits_nothing(pool_server: Any, import_catalog: Any) -> None:
    business = listening(["message.created"])
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    message = message_receive(
        business=business, channel=Channel.WIDGET, contact_external_id="owner", text="stove?", preview=True
    )
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    assert Message.objects.get(role="agent").status == "done"
    assert events(business) == []
