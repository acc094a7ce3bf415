"""common.tracing: a widget question's reply is one trace, socket -> task (across the real broker's message
headers) -> retrieval -> pool, into the SDK's in-memory exporter; no span carries the customer's or the
reply's words."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import tracing
from config.asgi import application
from messaging.models import Message
from messaging.tasks import reply as reply_task
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.inference_server import InferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "do you have a gas stove for camping?"
ANSWER = "Yes, our Pocket gas stove folds small."


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "_tracer", None)  # restored after the test: tracing off again
    tracing.install(SimpleSpanProcessor(exporter))
    return exporter


def test_a_widget_reply_is_one_trace_across_the_task_with_no_text_in_its_spans(
    spans: InMemorySpanExporter, pool_server: InferenceServer, import_catalog: Any, redis_client: Any
) -> None:
    shop = BusinessFactory()
    import_catalog(shop, SMALL_CATALOG_CSV, embed=True)
    pool_server.script(ANSWER)

    async def ask() -> int:
        ws = WebsocketCommunicator(
            application, f"/ws/chat/{shop.widget_key}/", headers=[(b"origin", b"https://shop.example")]
        )
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "hello"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "ready"
        await ws.send_json_to({"type": "message", "client_id": "c1", "text": QUESTION})
        created = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return int(created["message"]["id"])

    message_id = async_to_sync(ask)()
    (raw,) = redis_client.lrange("replies", 0, -1)
    envelope = json.loads(raw)
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert args[0] == message_id
    headers = {"traceparent": envelope["headers"]["traceparent"]}
    assert reply_task.apply(args=args, kwargs=kwargs, headers=headers).get() == "done"
    assert ANSWER in Message.objects.get(reply_to_id=message_id).text

    finished = {span.name: span for span in spans.get_finished_spans()}
    socket, task, reply = finished["chat.message"], finished["task messaging.tasks.reply"], finished["reply"]
    assert socket.parent is None
    assert task.parent is not None and task.parent.span_id == socket.context.span_id
    assert reply.parent is not None and reply.parent.span_id == task.context.span_id
    retrievals = [span for span in spans.get_finished_spans() if span.name == "retrieval"]
    assert retrievals and all(span.parent.span_id == reply.context.span_id for span in retrievals)  # type: ignore[union-attr]
    pool = finished["pool chat"]
    assert pool.attributes is not None and pool.attributes["outcome"] == "ok"
    assert {span.context.trace_id for span in finished.values()} == {socket.context.trace_id}
    assert socket.attributes == {"business_id": shop.pk, "text_chars": len(QUESTION)}
    words = [str(value) for span in spans.get_finished_spans() for value in (span.attributes or {}).values()]
    assert not any(QUESTION in word or "stove" in word.lower() or ANSWER in word for word in words)
