"""Inference endpoint API keys added in the admin are encrypted at rest and sent as the bearer token."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from inference import types
from inference.chat import stream_chat
from inference.endpoints import pool_endpoints, reset_endpoint_cache
from inference.models import InferenceEndpoint


def _stored_key(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM agents_inferenceendpoint WHERE id = %s", [pk])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_the_key_is_stored_encrypted_and_read_back_plain() -> None:
    row = InferenceEndpoint.objects.create(name="gpu", base_url="http://gpu1:8000", api_key="sk-secret-1")
    stored = _stored_key(row.pk)
    assert stored.startswith("fernet:") and "sk-secret-1" not in stored
    assert InferenceEndpoint.objects.get(pk=row.pk).api_key == "sk-secret-1"
    reset_endpoint_cache()
    [endpoint] = [e for e in pool_endpoints() if e.source == "admin"]
    assert endpoint.headers() == {"Authorization": "Bearer sk-secret-1"}


@pytest.mark.django_db(transaction=True)
def test_requests_to_an_admin_endpoint_carry_its_key(pool_server: Any, settings: Any) -> None:
    settings.LLAMA_POOL = ""
    InferenceEndpoint.objects.create(name="test", base_url=pool_server.url, api_key="sk-secret-2")
    reset_endpoint_cache()

    async def ask() -> list[Any]:
        request = types.ChatRequest(business_id=0, messages=[{"role": "user", "content": "hi"}])
        return [event async for event in stream_chat(request)]

    async_to_sync(ask)()
    assert pool_server.requests[-1].headers.get("authorization") == "Bearer sk-secret-2"


@pytest.mark.django_db
def test_the_migration_encrypts_keys_stored_in_plain_text() -> None:
    row = InferenceEndpoint.objects.create(name="old", base_url="http://gpu2:8000")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE agents_inferenceendpoint SET api_key = 'sk-plain' WHERE id = %s", [row.pk])
    migration = importlib.import_module("agents.migrations.0003_encrypt_endpoint_api_keys")
    with connection.schema_editor() as editor:
        migration.encrypt_stored_keys(None, editor)
    assert _stored_key(row.pk).startswith("fernet:")
    assert InferenceEndpoint.objects.get(pk=row.pk).api_key == "sk-plain"
