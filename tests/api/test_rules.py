"""The REST API's rules, the same on every resource: the schema, authentication, scopes, the rate limit per
key, problem details, cursor pagination and idempotency keys (docs/api.md)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import encode_multipart
from openapi_spec_validator import validate

from agents.models import CuratedAnswer
from businesses.models import ApiKey
from businesses.services import api_key_issue, api_key_revoke
from catalogs.models import Import, Item
from common.idempotency import HEADER
from tests.fixtures.api import Tenant, call

pytestmark = pytest.mark.django_db


def test_the_schema_is_valid_openapi_3_1_and_documents_every_rule(client: Client) -> None:
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    assert schema["openapi"] == "3.1.0"
    assert schema["components"]["securitySchemes"] == {"ApiKeyAuth": {"type": "http", "scheme": "bearer"}}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"ApiKeyAuth": []}], (method, path)
            assert operation["responses"]["4XX"]["content"]["application/problem+json"], (method, path)
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            assert (HEADER in headers) == (method == "post"), (method, path)


def test_the_docs_page_loads_its_scripts_from_this_site(client: Client) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "https://" not in html  # no CDN: the content security policy allows scripts from here only
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer nope", "Basic Zm9vOmJhcg==", "Bearer "],
    ids=["none", "wrong-key", "wrong-scheme", "empty"],
)
def test_without_a_valid_key_every_answer_is_401(tenant: Tenant, authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/api/v1/items", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "a valid API key is required (Authorization: Bearer <key>)",
        "instance": "/api/v1/items",
        "code": "unauthorized",
    }


def test_a_revoked_key_is_refused(tenant: Tenant) -> None:
    issued = api_key_issue(tenant.business, name="old")
    api_key_revoke(tenant.business, api_key_id=issued.api_key.pk)
    assert call(Client(), "get", "/api/v1/items", issued.raw_key).status_code == 401


def test_a_key_made_without_scopes_has_them_all(tenant: Tenant) -> None:
    assert ApiKey.objects.get(business=tenant.business).scopes == ["read", "write", "conversations"]


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["read"], {"read"}),
        (["write"], {"write"}),
        (["conversations"], {"conversations"}),
        (["read", "conversations"], {"read", "conversations"}),
    ],
)
def test_each_operation_needs_its_scope(tenant: Tenant, scopes: list[str], allowed: set[str]) -> None:
    key = api_key_issue(tenant.business, name="scoped", scopes=scopes).raw_key
    client = Client()
    conversation = tenant.ids["conversation_id"]
    cases = [
        ("read", "get", "/api/v1/items", None),
        ("read", "get", "/api/v1/agent/settings", None),
        ("read", "get", "/api/v1/channel-accounts", None),
        ("write", "put", "/api/v1/items/NEW-1", {"title": "New lamp"}),
        ("write", "post", "/api/v1/curated-answers", {"question": "Gift wrap?", "answer": "Yes, free."}),
        ("conversations", "get", "/api/v1/conversations", None),
        ("conversations", "get", "/api/v1/contacts", None),
        ("conversations", "post", f"/api/v1/conversations/{conversation}/handoff", {}),
    ]
    for scope, method, path, body in cases:
        response = call(client, method, path, key, json=body)
        if scope in allowed:
            assert response.status_code < 300, (scope, path, response.content)
        else:
            assert response.status_code == 403, (scope, path)
            assert response.json()["code"] == "scope_missing"
            assert f"lacks the '{scope}' scope" in response.json()["detail"]
    # A refused write wrote nothing.
    assert Item.objects.filter(external_id="NEW-1").exists() == ("write" in allowed)
    assert CuratedAnswer.objects.filter(question="Gift wrap?").exists() == ("write" in allowed)


def test_over_the_rate_limit_a_key_gets_429_with_retry_after(tenant: Tenant, settings: Any) -> None:
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    client = Client()
    answers = [call(client, "get", "/api/v1/items", tenant.key) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["detail"] == "over this key's limit of 3 requests a minute"
    # The limit is the key's: another key of the same business still gets through.
    other = api_key_issue(tenant.business, name="other").raw_key
    assert call(client, "get", "/api/v1/items", other).status_code == 200


def test_a_refused_write_over_the_limit_writes_nothing(tenant: Tenant, settings: Any) -> None:
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    client = Client()
    call(client, "get", "/api/v1/items", tenant.key)
    response = call(client, "put", "/api/v1/items/LIMITED", tenant.key, json={"title": "Too fast"})
    assert response.status_code == 429
    assert not Item.objects.filter(external_id="LIMITED").exists()


def test_unknown_paths_and_methods_are_problems_too(tenant: Tenant) -> None:
    client = Client()
    missing = call(client, "get", "/api/v1/nothing-here", tenant.key)
    assert (missing.status_code, missing["Content-Type"]) == (404, "application/problem+json")
    assert missing.json()["status"] == 404
    wrong_method = call(client, "delete", "/api/v1/items", tenant.key)
    assert (wrong_method.status_code, wrong_method["Content-Type"]) == (405, "application/problem+json")
    assert wrong_method.json()["detail"] == "this path does not take DELETE"
    assert "GET" in wrong_method["Allow"]


def test_validation_errors_name_the_field(tenant: Tenant) -> None:
    response = call(Client(), "put", "/api/v1/items/SKU-1", tenant.key, json={"title": "", "price": "abc"})
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["detail"]) == ("validation_failed", "the request is not valid")
    assert {e["field"] for e in body["errors"]} == {"body.title", "body.price"}
    not_json = Client().put(
        "/api/v1/items/SKU-1",
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.key}",
    )
    assert not_json.status_code in (400, 422)
    assert not_json["Content-Type"] == "application/problem+json"
    assert not Item.objects.filter(external_id="SKU-1").exists()


def test_cursor_pagination_walks_every_row_once(tenant: Tenant) -> None:
    client = Client()
    for n in range(5):
        call(client, "put", f"/api/v1/items/PAGE-{n}", tenant.key, json={"title": f"Page item {n}"})
    seen: list[str] = []
    url = "/api/v1/items?limit=2&q=Page item"
    pages = 0
    while url:
        body = call(client, "get", url, tenant.key).json()
        seen += [item["external_id"] for item in body["items"]]
        pages += 1
        url = f"/api/v1/items?limit=2&q=Page item&cursor={body['next_cursor']}" if body["next_cursor"] else ""
    assert (seen, pages) == ([f"PAGE-{n}" for n in range(5)], 3)


def test_an_altered_or_foreign_cursor_is_a_400(tenant: Tenant) -> None:
    client = Client()
    cursor = call(client, "get", "/api/v1/items?limit=1", tenant.key).json()["next_cursor"]
    assert cursor
    for bad in (cursor[:-2] + "xx", "garbage", cursor):
        path = "/api/v1/contacts" if bad == cursor else "/api/v1/items"
        response = call(client, "get", f"{path}?cursor={bad}", tenant.key)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_cursor"


def test_a_retried_post_with_the_same_idempotency_key_is_done_once(tenant: Tenant) -> None:
    client = Client()
    body = {"question": "Do you repair tents?", "answer": "Yes, within a week."}
    first = call(client, "post", "/api/v1/curated-answers", tenant.key, json=body, **{HEADER: "retry-1"})
    again = call(client, "post", "/api/v1/curated-answers", tenant.key, json=body, **{HEADER: "retry-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert CuratedAnswer.objects.filter(question="Do you repair tents?").count() == 1
    # The same key with another body: refused, nothing done.
    other = call(
        client,
        "post",
        "/api/v1/curated-answers",
        tenant.key,
        json={**body, "question": "Do you repair boots?"},
        **{HEADER: "retry-1"},
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert not CuratedAnswer.objects.filter(question="Do you repair boots?").exists()
    # Another key of the business does not see this one's stored answers: its POST runs.
    second_key = api_key_issue(tenant.business, name="second").raw_key
    fresh = call(
        client,
        "post",
        "/api/v1/curated-answers",
        second_key,
        json=body | {"question": "Rent tents?"},
        **{HEADER: "retry-1"},
    )
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh


def test_a_post_whose_key_is_in_use_is_refused_with_409(tenant: Tenant, redis_client: Any) -> None:
    # The first request with this key still runs: it holds the key's lock (as common.idempotency names it).
    caller = hashlib.sha256(tenant.key.encode()).hexdigest()
    redis_client.set(f"idem:{caller}:{hashlib.sha256(b'k-1').hexdigest()}:lock", 1, ex=60)
    body = {"question": "Do you sell maps?", "answer": "Yes."}
    busy = call(Client(), "post", "/api/v1/curated-answers", tenant.key, json=body, **{HEADER: "k-1"})
    assert (busy.status_code, busy.json()["code"], busy["Retry-After"]) == (
        409,
        "idempotency_key_in_use",
        "1",
    )
    assert not CuratedAnswer.objects.filter(question="Do you sell maps?").exists()


def test_a_bad_idempotency_key_is_a_400(tenant: Tenant) -> None:
    response = call(
        Client(),
        "post",
        "/api/v1/curated-answers",
        tenant.key,
        json={"question": "Q?", "answer": "A."},
        **{HEADER: "x" * 256},
    )
    assert response.status_code == 400
    assert not CuratedAnswer.objects.filter(question="Q?").exists()


def test_a_retried_upload_with_a_new_multipart_boundary_is_recognised(
    tenant: Tenant, catalog_media: Any
) -> None:
    before = Import.objects.filter(business=tenant.business).count()
    answers = []
    for boundary in ("AaB03x", "ZzY98w"):
        feed = SimpleUploadedFile("feed.csv", b"id,title\nSKU-9,Boot\n", content_type="text/csv")
        client = Client()
        answers.append(
            client.post(
                "/api/v1/catalog/imports",
                data=encode_multipart(boundary, {"file": feed}),
                content_type=f"multipart/form-data; boundary={boundary}",
                HTTP_AUTHORIZATION=f"Bearer {tenant.key}",
                HTTP_IDEMPOTENCY_KEY="upload-1",
            )
        )
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert answers[1]["Location"] == answers[0]["Location"]
    assert Import.objects.filter(business=tenant.business).count() == before + 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # The fuzz test found these: PostgreSQL stores no NUL, so the write failed after the checks passed.
        ("post", "/api/v1/documents", {"title": "FAQ\u0000", "text": "# Returns\nWithin 30 days."}),
        ("put", "/api/v1/items/NUL-1", {"title": "Tent", "attributes": {"colour\u0000": "red"}}),
        ("post", "/api/v1/curated-answers", {"question": "Ship?", "answer": "Yes\u0000"}),
    ],
)
def test_text_with_a_nul_character_is_refused_and_nothing_is_written(
    tenant: Tenant, method: str, path: str, body: dict[str, Any]
) -> None:
    before = (Item.objects.count(), CuratedAnswer.objects.count(), Import.objects.count())
    response = call(Client(), method, path, tenant.key, json=body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "text may not contain NUL characters (\\u0000)"
    assert (Item.objects.count(), CuratedAnswer.objects.count(), Import.objects.count()) == before
    # In a query parameter too.
    assert call(Client(), "get", "/api/v1/items?q=a%00b", tenant.key).status_code == 400
