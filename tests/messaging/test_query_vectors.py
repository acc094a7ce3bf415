"""messaging.query_vectors: a widget question's embedding, started by the chat socket and handed to its reply
task through the real Redis, with the test inference server as the pool's embedding endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from agents.retrieval import prefetch_query
from common.redis import async_client
from config.asgi import application
from messaging import query_vectors
from messaging.models import Message
from messaging.replies.engine import run_reply
from messaging.services import conversation_handoff, message_receive
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.inference_server import InferenceServer, embedding_of

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "how much is the stove?"


@pytest.fixture
def pool_embeddings(settings: Any, pool_server: InferenceServer) -> InferenceServer:
    settings.EMBEDDINGS_BACKEND = "pool"
    return pool_server


def embedding_calls(server: InferenceServer) -> int:
    return server.requests_by_path.get("/v1/embeddings", 0)


async def test_the_handed_over_vector_is_the_questions_and_stays_for_a_retried_task(
    pool_embeddings: InferenceServer,
) -> None:
    token = query_vectors.new_token()
    assert token is not None
    await query_vectors.hand_over(token, QUESTION)
    expected = embedding_of(prefetch_query(QUESTION))
    for _ in range(2):  # the first read does not consume it
        assert await query_vectors.take(token) == pytest.approx(expected, abs=1e-6)
    assert embedding_calls(pool_embeddings) == 1


async def test_without_a_vector_the_task_waits_a_bounded_time_and_a_failed_embedding_says_so_at_once(
    pool_embeddings: InferenceServer,
) -> None:
    started = time.monotonic()
    assert await query_vectors.take("never-handed-over") is None  # a socket process that died
    assert query_vectors.WAIT_SECONDS - 0.1 <= time.monotonic() - started < query_vectors.WAIT_SECONDS + 1
    pool_embeddings.fault("status", status=500)
    token = query_vectors.new_token()
    assert token is not None
    await query_vectors.hand_over(token, QUESTION)
    started = time.monotonic()
    assert await query_vectors.take(token) is None
    assert time.monotonic() - started < 0.5


def test_nothing_is_handed_over_with_the_local_model(settings: Any) -> None:
    settings.EMBEDDINGS_BACKEND = "local"  # it embeds inside the search, in the database thread
    assert query_vectors.new_token() is None


@pytest.fixture
def shop(pool_embeddings: InferenceServer, import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def test_the_reply_searches_with_the_handed_over_vector_and_without_it_embeds_itself(
    pool_embeddings: InferenceServer, shop: Any
) -> None:
    pool_embeddings.script("The Pocket gas stove is 39.90 EUR.")
    widget = {"business": shop, "channel": "widget", "contact_external_id": "v1"}

    def ask(client_id: str, token: str | None) -> tuple[str, int, Message]:
        message = message_receive(
            text=QUESTION, client_message_id=client_id, query_vector_token=token, **widget
        )
        assert message is not None
        if token:
            async_to_sync(query_vectors.hand_over)(token, message.text)
        before = embedding_calls(pool_embeddings)
        known = {"conversation_id": message.conversation_id, "business_id": shop.pk, "text": message.text}
        outcome = async_to_sync(run_reply)(message.pk, query_vector_token=token, **known)
        return outcome, embedding_calls(pool_embeddings) - before, Message.objects.get(reply_to=message)

    outcome, embedded, answer = ask("c1", query_vectors.new_token())
    assert (outcome, embedded, answer.status) == ("done", 0, "done")
    assert any("stove" in citation["title"].lower() for citation in answer.citations)
    # No token (a messaging channel's message, or a task queued by an older release): it embeds the question.
    outcome, embedded, answer = ask("c2", None)
    assert (outcome, embedded, answer.status) == ("done", 1, "done")


async def queued_replies() -> dict[int, dict[str, Any]]:
    """The reply tasks waiting in the broker's ``replies`` list: message id -> the task's keyword arguments."""
    tasks = {}
    for raw in await async_client().lrange("replies", 0, -1):
        envelope = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        tasks[args[0]] = kwargs
    return tasks


async def test_the_chat_socket_hands_the_questions_vector_to_its_queued_reply_and_none_when_staff_answer(
    pool_embeddings: InferenceServer,
) -> None:
    business = await database_sync_to_async(BusinessFactory)()
    ws = WebsocketCommunicator(
        application, f"/ws/chat/{business.widget_key}/", headers=[(b"origin", b"https://shop.example")]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "hello"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "ready"
    await ws.send_json_to({"type": "message", "client_id": "c1", "text": f"  {QUESTION} "})
    created = await ws.receive_json_from(timeout=5)
    assert created["type"] == "message.created"
    token = (await queued_replies())[created["message"]["id"]]["query_vector_token"]
    assert await query_vectors.take(token) == pytest.approx(embedding_of(prefetch_query(QUESTION)), abs=1e-6)
    assert embedding_calls(pool_embeddings) == 1

    # Staff have the conversation: no reply is queued, so nothing is embedded or handed over.
    conversation_id = created["message"]["conversation_id"]
    await database_sync_to_async(conversation_handoff)(
        business=business, conversation_id=conversation_id, reason="test"
    )
    await ws.send_json_to({"type": "message", "client_id": "c2", "text": "still there?"})
    frames = [await ws.receive_json_from(timeout=5) for _ in range(2)]  # the handoff, then the message
    created = next(frame for frame in frames if frame["type"] == "message.created")
    await asyncio.sleep(0.3)
    assert created["message"]["id"] not in await queued_replies()
    assert len(await async_client().keys("query-vector:*")) == 1
    assert embedding_calls(pool_embeddings) == 1
    await ws.disconnect()
