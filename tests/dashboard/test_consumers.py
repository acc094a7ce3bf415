"""The import progress websocket, through the real ASGI app and Redis channel layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from catalogs.models import Import
from catalogs.services.progress import import_group, progress_key
from common.redis import sync_client
from config.asgi import application
from tests.dashboard.conftest import Tenant, make_import

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def _session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def _open(slug: str, import_id: int, user: Any | None) -> tuple[WebsocketCommunicator, bool, Any]:
    # The admin's own page opens the socket (the origin check: tests/security/test_accounts.py).
    headers = [(b"origin", b"http://localhost:8000")]
    headers += [(b"cookie", await _session_cookie(user))] if user is not None else []
    communicator = WebsocketCommunicator(application, f"/ws/app/{slug}/imports/{import_id}/", headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_a_member_follows_the_import_live(tenant_a: Tenant) -> None:
    imp = await database_sync_to_async(make_import)(tenant_a.business)
    await database_sync_to_async(Import.objects.filter(pk=imp.pk).update)(
        state=Import.State.RUNNING, phase=Import.Phase.READING, rows_total=0, rows_done=0
    )
    communicator, connected, _ = await _open(tenant_a.business.slug, imp.pk, tenant_a.staff)
    assert connected
    first = await communicator.receive_json_from(timeout=5)
    assert (first["type"], first["status"]["state"], first["status"]["rows_done"]) == (
        "import.status",
        "running",
        0,
    )

    # What the import does while its transaction is open: the last event in Redis, then a group send.
    event = {
        "import_id": imp.pk,
        "phase": "writing",
        "rows_done": 50,
        "rows_total": 200,
        "rate": 100.0,
        "eta": 1.5,
    }
    sync_client().set(progress_key(imp.pk), json.dumps(event), ex=60)
    await get_channel_layer().group_send(import_group(imp.pk), {"type": "import.progress", **event})
    status = (await communicator.receive_json_from(timeout=5))["status"]
    assert (status["phase"], status["rows_done"], status["rows_total"], status["percent"]) == (
        "writing",
        50,
        200,
        25,
    )
    assert (status["rate"], status["eta_seconds"], status["finished"]) == (100.0, 1.5, False)

    await database_sync_to_async(Import.objects.filter(pk=imp.pk).update)(
        state=Import.State.SUCCEEDED, phase=Import.Phase.DONE, rows_total=200, rows_done=200
    )
    await get_channel_layer().group_send(
        import_group(imp.pk), {"type": "import.progress", **event, "phase": "done"}
    )
    status = (await communicator.receive_json_from(timeout=5))["status"]
    assert (status["state"], status["percent"], status["finished"]) == ("succeeded", 100, True)
    assert status["errors_url"] == f"/app/{tenant_a.business.slug}/catalog/imports/{imp.pk}/errors.csv"
    await communicator.disconnect()


@pytest.mark.parametrize("who", ["anonymous", "stranger", "b_import_under_a_slug"])
async def test_others_cannot_follow_an_import(who: str, tenant_a: Tenant, tenant_b: Tenant) -> None:
    imp = await database_sync_to_async(make_import)(tenant_b.business)
    slug, user = {
        "anonymous": (tenant_b.business.slug, None),
        "stranger": (tenant_b.business.slug, tenant_a.owner),
        "b_import_under_a_slug": (tenant_a.business.slug, tenant_a.owner),
    }[who]
    communicator, connected, code = await _open(slug, imp.pk, user)
    assert (connected, code) == (False, 4403)
    assert await communicator.receive_nothing(timeout=0.2)
