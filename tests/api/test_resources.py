"""Each resource of the REST API through its real services: items (upsert, retire, list, search), documents,
conversations (staff message, handoff, hand back, close), contacts, channel accounts (no secrets), curated
answers, agent settings (the admin form's checks) and analytics."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from agents.models import CuratedAnswer
from agents.selectors import curated_match
from agents.services import agent_update
from catalogs.models import Document, Item
from messaging.models import Conversation, Message, MessageMedia
from tests.fixtures.api import Tenant, call

pytestmark = pytest.mark.django_db


def test_an_item_is_created_changed_found_and_retired(tenant: Tenant) -> None:
    client = Client()
    body = {
        "title": "Trail <b>lantern</b>",
        "price": "24.50",
        "currency": "eur",
        "availability": "in_stock",
        "url": "https://shop.example/p/lantern",
        "attributes": {"color": "orange"},
    }
    created = call(client, "put", "/api/v1/items/LANTERN-1", tenant.key, json=body)
    assert created.status_code == 201
    item = created.json()
    assert {k: item[k] for k in ("external_id", "title", "price", "currency", "is_active", "attributes")} == {
        "external_id": "LANTERN-1",
        "title": "Trail lantern",  # HTML stripped, as an imported row's
        "price": "24.50",
        "currency": "EUR",
        "is_active": True,
        "attributes": {"color": "orange"},
    }
    stored = Item.objects.get(business=tenant.business, external_id="LANTERN-1")
    assert stored.embedding is not None  # embedded at once: the agent can find it
    vector = list(stored.embedding)
    # A price change: updated (200), the vector kept (the embedded text did not change).
    changed = call(client, "put", "/api/v1/items/LANTERN-1", tenant.key, json={**body, "price": "19.90"})
    assert (changed.status_code, changed.json()["price"]) == (200, "19.90")
    stored.refresh_from_db()
    assert list(stored.embedding) == vector
    assert call(client, "get", "/api/v1/items/LANTERN-1", tenant.key).json()["price"] == "19.90"
    hits = call(client, "get", "/api/v1/search?q=trail lantern&include_documents=false", tenant.key).json()
    assert "LANTERN-1" in [h["external_id"] for h in hits]
    # Retired: gone from the list and the search, still readable, and back with an upsert.
    assert call(client, "delete", "/api/v1/items/LANTERN-1", tenant.key).status_code == 204
    assert call(client, "get", "/api/v1/items/LANTERN-1", tenant.key).json()["is_active"] is False
    listed = call(client, "get", "/api/v1/items?q=trail", tenant.key).json()["items"]
    assert [i["external_id"] for i in listed] == []
    hits = call(client, "get", "/api/v1/search?q=trail lantern&include_documents=false", tenant.key).json()
    assert "LANTERN-1" not in [h["external_id"] for h in hits]
    retired = call(client, "get", "/api/v1/items?q=trail&include_retired=true", tenant.key).json()
    assert [i["external_id"] for i in retired["items"]] == ["LANTERN-1"]
    assert call(client, "put", "/api/v1/items/LANTERN-1", tenant.key, json=body).status_code == 200
    assert Item.objects.get(pk=stored.pk).is_active is True
    assert call(client, "delete", "/api/v1/items/NOPE", tenant.key).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "url": "javascript:alert(1)"}, "body.url"),
        ({"title": "x", "image_url": "ftp://host/a.png"}, "body.image_url"),
        ({"title": "<b></b>"}, "body.title"),
        ({"title": "x", "availability": "sold"}, "body.availability"),
        ({"title": "x", "price": "-1"}, "body.price"),
        ({"title": "x", "price": "1.234"}, "body.price"),
    ],
)
def test_a_bad_item_is_refused_with_its_field(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    response = call(Client(), "put", "/api/v1/items/BAD-1", tenant.key, json=body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
    assert not Item.objects.filter(external_id="BAD-1").exists()


def test_items_filter_by_availability(tenant: Tenant) -> None:
    body = call(Client(), "get", "/api/v1/items?availability=out_of_stock", tenant.key).json()
    assert [i["external_id"] for i in body["items"]] == ["BAG-0C"]
    assert body["next_cursor"] is None


def test_a_document_is_created_replaced_read_and_deleted(tenant: Tenant, catalog_media: Any) -> None:
    client = Client()
    text = "# Warranty\n\nTwo years on every tent.\n\n## Claims\n\nWrite to us with the receipt.\n"
    created = call(
        client,
        "post",
        "/api/v1/documents",
        tenant.key,
        json={"title": "Warranty", "text": text, "kind": "policy"},
    )
    assert created.status_code == 201, created.content
    document = created.json()
    assert (document["title"], document["kind"], document["chunk_count"]) == ("Warranty", "policy", 2)
    assert [c["heading"] for c in document["chunks"]] == ["Warranty", "Warranty > Claims"]
    hits = call(client, "get", "/api/v1/search?q=warranty claims receipt", tenant.key).json()
    assert any(h["kind"] == "chunk" and "receipt" in h["text"] for h in hits)
    replaced = call(
        client,
        "post",
        "/api/v1/documents",
        tenant.key,
        json={"title": "Warranty", "text": "Three years now.", "format": "text", "kind": "policy"},
    )
    assert (replaced.status_code, replaced.json()["id"], replaced.json()["chunk_count"]) == (
        200,
        document["id"],
        1,
    )
    listed = call(client, "get", "/api/v1/documents", tenant.key).json()["items"]
    assert sorted(d["title"] for d in listed) == ["Shipping", "Warranty"]
    assert call(client, "delete", f"/api/v1/documents/{document['id']}", tenant.key).status_code == 204
    assert call(client, "get", f"/api/v1/documents/{document['id']}", tenant.key).status_code == 404
    assert not Document.objects.filter(pk=document["id"]).exists()


def test_an_empty_document_is_a_422(tenant: Tenant, catalog_media: Any) -> None:
    response = call(Client(), "post", "/api/v1/documents", tenant.key, json={"title": "Blank", "text": "   "})
    assert response.status_code == 422
    assert response.json()["detail"] == "the document holds no text"
    assert not Document.objects.filter(business=tenant.business, title="Blank").exists()


def test_a_conversation_is_read_answered_handed_over_and_closed(tenant: Tenant) -> None:
    client = Client()
    conversation_id = tenant.ids["conversation_id"]
    base = f"/api/v1/conversations/{conversation_id}"
    listed = call(client, "get", "/api/v1/conversations?state=bot", tenant.key).json()["items"]
    assert [c["id"] for c in listed] == [conversation_id]
    assert listed[0]["contact"]["external_id"] == "visitor-Shop A"
    messages = call(client, "get", f"{base}/messages", tenant.key).json()["items"]
    assert [(m["role"], m["text"], m["media"]) for m in messages] == [("customer", "Do you have tents?", [])]
    # A voice note the customer sent, with what the agent read in it (the file itself is not served here).
    asked = Message.objects.get(conversation_id=conversation_id)
    MessageMedia.objects.create(
        business=tenant.business,
        message=asked,
        kind="audio",
        state="read",
        content_type="audio/ogg",
        size=1234,
        description="Do you have tents?",
    )
    (listed_message,) = call(client, "get", f"{base}/messages", tenant.key).json()["items"]
    assert listed_message["media"] == [
        {
            "kind": "audio",
            "state": "read",
            "content_type": "audio/ogg",
            "size": 1234,
            "description": "Do you have tents?",
        }
    ]

    sent = call(client, "post", f"{base}/messages", tenant.key, json={"text": "  Yes, three of them.  "})
    assert sent.status_code == 201
    assert (sent.json()["role"], sent.json()["text"]) == ("staff", "Yes, three of them.")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.state, conversation.handoff_reason) == ("human", "staff replied")
    back = call(client, "post", f"{base}/hand-back", tenant.key)
    assert (back.status_code, back.json()["state"]) == (200, "bot")
    over = call(client, "post", f"{base}/handoff", tenant.key, json={"reason": "refund request"})
    assert (over.json()["state"], over.json()["handoff_reason"]) == ("human", "refund request")
    closed = call(client, "post", f"{base}/close", tenant.key)
    assert closed.json()["state"] == "closed" and closed.json()["closed_at"]
    # A closed conversation takes no more messages or handoffs: 409, nothing written.
    for path, body in (
        (f"{base}/messages", {"text": "Hello?"}),
        (f"{base}/handoff", {}),
        (f"{base}/hand-back", None),
    ):
        refused = call(client, "post", path, tenant.key, json=body)
        assert (refused.status_code, refused.json()["code"]) == (409, "closed"), path
    assert Message.objects.filter(conversation_id=conversation_id).count() == 2
    assert call(client, "post", f"{base}/messages", tenant.key, json={"text": "   "}).status_code in (
        409,
        422,
    )


def test_contacts_and_channel_accounts_without_secrets(tenant: Tenant) -> None:
    client = Client()
    contacts = call(client, "get", "/api/v1/contacts?channel=widget", tenant.key).json()["items"]
    assert [(c["id"], c["name"]) for c in contacts] == [(tenant.ids["contact_id"], "Shop A")]
    contact = call(client, "get", f"/api/v1/contacts/{tenant.ids['contact_id']}", tenant.key).json()
    assert contact["external_id"] == "visitor-Shop A"
    accounts = call(client, "get", "/api/v1/channel-accounts", tenant.key)
    one = call(client, "get", f"/api/v1/channel-accounts/{tenant.ids['account_id']}", tenant.key)
    assert accounts.json()[0]["name"] == "Main number"
    assert one.json()["kind"] == "whatsapp"
    for response in (accounts, one):
        text = response.content.decode()
        for secret in (
            "access-token",
            "app-secret",
            "verify-token",
            "access_token",
            "app_secret",
            "verify_token",
        ):
            assert secret not in text


def test_curated_answers_crud(tenant: Tenant) -> None:
    client = Client()
    created = call(
        client,
        "post",
        "/api/v1/curated-answers",
        tenant.key,
        json={
            "question": "Do you rent  tents?",
            "paraphrases": ["Can I hire a tent?", ""],
            "answer": "Yes: 15 EUR a day.",
        },
    )
    assert created.status_code == 201
    curated = created.json()
    assert (curated["question"], curated["paraphrases"]) == ("Do you rent tents?", ["Can I hire a tent?"])
    assert curated_match(tenant.business, "Can I hire a tent?").curated_id == curated["id"]
    url = f"/api/v1/curated-answers/{curated['id']}"
    updated = call(
        client, "put", url, tenant.key, json={"question": "Do you rent tents?", "answer": "No longer."}
    )
    assert (updated.status_code, updated.json()["answer"], updated.json()["paraphrases"]) == (
        200,
        "No longer.",
        [],
    )
    listed = call(client, "get", "/api/v1/curated-answers?q=rent", tenant.key).json()["items"]
    assert [c["id"] for c in listed] == [curated["id"]]
    too_long = call(
        client, "post", "/api/v1/curated-answers", tenant.key, json={"question": "Q" * 501, "answer": "A"}
    )
    assert too_long.status_code == 422
    assert call(client, "delete", url, tenant.key).status_code == 204
    assert not CuratedAnswer.objects.filter(pk=curated["id"]).exists()


def test_agent_settings_are_patched_as_a_draft_through_the_admin_forms_checks_and_published(
    tenant: Tenant,
) -> None:
    client = Client()
    before = call(client, "get", "/api/v1/agent/settings", tenant.key).json()
    assert (before["draft"], before["draft_check"]["state"]) == ({}, "none")
    patch = {
        "greeting": "Welcome to Shop A!",
        "languages": ["en", "DE"],
        "handoff_keywords": ["manager", "human please"],
        "business_hours": {"mon": [["09:00", "12:00"], ["13:00", "18:00"]], "sun": []},
    }
    response = call(client, "patch", "/api/v1/agent/settings", tenant.key, json=patch)
    assert response.status_code == 200, response.content
    drafted = response.json()
    # Customers keep the published settings; the draft holds the change, and the suite checks it.
    assert drafted["greeting"] == before["greeting"]
    draft = drafted["draft"]
    assert draft["greeting"] == "Welcome to Shop A!"
    assert draft["languages"] == ["en", "de"]
    assert draft["handoff_keywords"] == ["manager", "human please"]
    assert draft["business_hours"]["mon"] == [["09:00", "12:00"], ["13:00", "18:00"]]
    assert draft["business_hours"]["sun"] == []
    assert draft["business_hours"]["tue"] == before["business_hours"]["tue"]  # days left out keep their hours
    assert "tone" not in draft
    assert drafted["draft_check"]["state"] == "running" and drafted["draft_check"]["may_publish"] is False
    held = call(client, "post", "/api/v1/agent/settings/publish", tenant.key)
    assert held.status_code == 409 and held.json()["code"] == "publish_blocked"

    refused = call(
        client,
        "patch",
        "/api/v1/agent/settings",
        tenant.key,
        json={"temperature": 9, "business_hours": {"tue": [["18:00", "09:00"]]}, "languages": ["english!"]},
    )
    assert refused.status_code == 422
    fields = {e["field"] for e in refused.json()["errors"]}
    assert fields == {"body.temperature", "body.business_hours.tue", "body.languages"}
    assert call(client, "get", "/api/v1/agent/settings", tenant.key).json() == drafted

    # With the rule off, the draft is published.
    agent_update(tenant.business, publish_requires_suite=False)
    published = call(client, "post", "/api/v1/agent/settings/publish", tenant.key)
    assert published.status_code == 200, published.content
    body = published.json()
    assert (body["greeting"], body["languages"], body["draft"]) == ("Welcome to Shop A!", ["en", "de"], {})
    # A draft can be dropped.
    call(client, "patch", "/api/v1/agent/settings", tenant.key, json={"tone": "formal"})
    dropped = call(client, "delete", "/api/v1/agent/settings/draft", tenant.key)
    assert dropped.status_code == 200 and dropped.json()["draft"] == {}
    assert dropped.json()["tone"] == before["tone"]


def test_analytics_summary(tenant: Tenant) -> None:
    response = call(Client(), "get", "/api/v1/analytics?days=7", tenant.key)
    assert response.status_code == 200
    body = response.json()
    assert body["days"] == 7 and len(body["per_day"]) == 7
    assert body["conversations"] == 1
    assert sum(d["messages"] for d in body["per_day"]) == 1
    assert call(Client(), "get", "/api/v1/analytics?days=0", tenant.key).status_code == 422
