"""The process metrics (common.metrics) move where outcomes are decided, and /metrics shows them with no
business in any label, to a scraper with the token only. Read from the registry /metrics reads."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from common import aio
from messaging.meta import sending
from messaging.models import Message
from messaging.replies.engine import run_reply
from messaging.services import message_receive
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.meta import connect, signed, wa_change, wa_delivery, wa_text
from tests.inference_server import InferenceServer
from tests.metrics import metric_value as value

pytestmark = pytest.mark.django_db(transaction=True)


def test_replies_imports_sends_and_refused_webhooks_move_their_metrics_and_name_no_business(
    pool_server: InferenceServer,
    import_catalog: Any,
    graph_api: Any,
    meta_app: None,
    client: Client,
    settings: Any,
) -> None:
    shop = BusinessFactory(slug="metrics-shop-slug")
    connect(shop)
    before = {
        "imports": value("bizagent_imports_total", state="succeeded"),
        "created": value("bizagent_import_rows_total", result="created"),
        "done": value("bizagent_replies_total", outcome="done"),
        "first_token": value("bizagent_reply_first_token_seconds_count"),
        "sent": value("bizagent_sends_total", channel="whatsapp", outcome="sent"),
        "refused": value("bizagent_webhook_intake_total", platform="whatsapp", outcome="bad_signature"),
        "accepted": value("bizagent_webhook_intake_total", platform="whatsapp", outcome="accepted"),
    }

    finished = import_catalog(shop, SMALL_CATALOG_CSV, embed=True)
    assert value("bizagent_imports_total", state="succeeded") == before["imports"] + 1
    assert value("bizagent_import_rows_total", result="created") == before["created"] + finished.created_count

    pool_server.script("The Pocket gas stove is 39.90 EUR.")
    message = message_receive(
        business=shop, text="stove?", channel="whatsapp", contact_external_id="4915550001"
    )
    assert message is not None
    assert async_to_sync(run_reply)(message.pk) == "done"
    assert value("bizagent_replies_total", outcome="done") == before["done"] + 1
    assert value("bizagent_reply_first_token_seconds_count") == before["first_token"] + 1

    reply = Message.objects.get(reply_to=message)
    assert sending.message_send(message_id=reply.pk) == "sent"
    # One per part (the text, then a product card each).
    parts = len(graph_api.sends())
    assert parts > 1
    assert value("bizagent_sends_total", channel="whatsapp", outcome="sent") == before["sent"] + parts

    body, header = signed(
        wa_delivery(wa_change("106540352242922", messages=[wa_text("hi", wamid="wamid.M")]))
    )
    for signature in ("sha256=" + "0" * 64, header):
        client.post(
            "/webhooks/whatsapp",
            data=body,
            content_type="application/json",
            HTTP_X_HUB_SIGNATURE_256=signature,
        )
    aio.close_database_connections()
    assert (
        value("bizagent_webhook_intake_total", platform="whatsapp", outcome="bad_signature")
        == before["refused"] + 1
    )
    assert (
        value("bizagent_webhook_intake_total", platform="whatsapp", outcome="accepted")
        == before["accepted"] + 1
    )

    settings.METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    page = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).content.decode()
    assert 'bizagent_replies_total{outcome="done"}' in page
    assert 'bizagent_sends_total{channel="whatsapp",outcome="sent"}' in page
    assert 'bizagent_inference_tokens_total{endpoint="' in page
    assert "business" not in page
    assert shop.slug not in page and shop.name not in page
