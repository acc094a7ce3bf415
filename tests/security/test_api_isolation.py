"""Tenant isolation of the REST API, walked from its OpenAPI schema: every operation on a path with an id,
called with business A's key on business B's id, answers 404 (exactly like a missing id) and changes nothing
of B's (an item's upsert by its id, which names an item of A's own catalog, creates it in A's); every list
and every write without an id stays inside A. A path whose id this test cannot name fails
it, so a new path cannot skip it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from agents.models import CuratedAnswer
from catalogs.models import Chunk, Document, Import, Item
from config.api import api
from messaging.models import ChannelAccount, Contact, Conversation, Message
from regressions.models import RegressionRun
from tests.fixtures.api import Tenant, call

pytestmark = pytest.mark.django_db

SCHEMA = api.get_openapi_schema()
OPERATIONS = [
    (method, path)
    for path, methods in SCHEMA["paths"].items()
    for method in methods
    if method != "parameters"
]
# A valid body for each writing operation, so that the lookup (not the body's validation) answers.
BODIES: dict[tuple[str, str], Any] = {
    ("put", "/api/v1/items/{external_id}"): {"title": "Taken over", "price": "1.00"},
    ("post", "/api/v1/conversations/{conversation_id}/messages"): {"text": "Hello from A"},
    ("post", "/api/v1/conversations/{conversation_id}/handoff"): {"reason": "A wants it"},
    ("put", "/api/v1/curated-answers/{curated_id}"): {"question": "Hijacked?", "answer": "Yes."},
    ("post", "/api/v1/documents"): {"title": "A's policy", "text": "# Policy\n\nA's own words.\n"},
    ("post", "/api/v1/curated-answers"): {"question": "Open on Sunday?", "answer": "No."},
    ("patch", "/api/v1/agent/settings"): {"greeting": "Hello from A"},
}


def snapshot(business: Any) -> dict[str, Any]:
    """Everything of a business the API can read or change, as values."""

    def rows(model: Any, *fields: str) -> list[Any]:
        return list(model.objects.filter(business=business).order_by("pk").values_list(*fields))

    return {
        "items": rows(Item, "external_id", "title", "price", "is_active", "content_hash"),
        "documents": rows(Document, "title", "kind", "is_active"),
        "chunks": rows(Chunk, "text"),
        "imports": rows(Import, "state"),
        "conversations": rows(Conversation, "state", "handoff_reason", "closed_at", "updated_at"),
        "messages": rows(Message, "role", "text", "status"),
        "contacts": rows(Contact, "external_id", "name"),
        "accounts": rows(ChannelAccount, "name", "active"),
        "curated": rows(CuratedAnswer, "question", "answer", "is_active", "updated_at"),
        "runs": rows(RegressionRun, "state"),
        "agent": (business.agent.greeting, business.agent.updated_at) if hasattr(business, "agent") else None,
    }


def test_every_path_parameter_is_known() -> None:
    names = {name for _, path in OPERATIONS for name in re.findall(r"{(\w+)}", path)}
    assert names == {
        "external_id",
        "document_id",
        "import_id",
        "conversation_id",
        "contact_id",
        "account_id",
        "curated_id",
        "run_id",
    }


def test_another_business_ids_answer_404_and_change_nothing(tenant: Tenant, other_tenant: Tenant) -> None:
    client = Client()
    before = snapshot(other_tenant.business)
    upsert = ("put", "/api/v1/items/{external_id}")
    # The upsert last: it makes A an item of that id, which A's other calls would then reach.
    with_ids = sorted(((m, p) for m, p in OPERATIONS if "{" in p), key=lambda op: op == upsert)
    assert len(with_ids) == 19
    for method, path in with_ids:
        url = re.sub(r"{(\w+)}", lambda m: str(other_tenant.ids[m[1]]), path)
        response = call(client, method, url, tenant.key, json=BODIES.get((method, path)))
        if (method, path) == upsert:
            # An upsert names an item of the key's own catalog: A gets a new item of that id, B keeps its own.
            assert response.status_code == 201
            assert Item.objects.get(pk=response.json()["id"]).business_id == tenant.business.pk
            continue
        assert response.status_code == 404, (method, path, response.content)
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["detail"] == "not found"
        # B's own key reaches the same rows (the 404 is about the key, not a wrong URL).
        if method == "get":
            assert call(client, method, url, other_tenant.key).status_code == 200, (method, path)
    assert snapshot(other_tenant.business) == before


def test_lists_and_writes_without_an_id_stay_in_the_keys_business(
    tenant: Tenant, other_tenant: Tenant, catalog_media: Any
) -> None:
    client = Client()
    before = snapshot(other_tenant.business)
    for method, path in OPERATIONS:
        if "{" in path or path.endswith("/catalog/imports"):
            continue
        url = f"{path}?q=tent" if path.endswith("/search") else path
        response = call(client, method, url, tenant.key, json=BODIES.get((method, path)))
        if path.endswith("/agent/settings/publish"):
            # The draft the PATCH above made is still being checked by the suite: held back, not a failure.
            assert response.status_code in (200, 409), (method, path, response.content)
        else:
            assert response.status_code < 300, (method, path, response.content)
        text = response.content.decode()
        # B's rows never show: its item, its visitor, its conversation's words, its business's name.
        for foreign in (str(other_tenant.ids["external_id"]), "visitor-Shop B", "Shop B"):
            assert foreign not in text, (method, path)
    assert snapshot(other_tenant.business) == before
