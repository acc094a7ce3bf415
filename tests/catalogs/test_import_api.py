"""REST API of imports: Bearer API keys, 202 + status + errors.csv, and tenant isolation."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from businesses.services import api_key_issue, api_key_revoke
from catalogs.models import Import, Item
from catalogs.services.imports import import_run
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db

URL = "/api/v1/catalog/imports"


def auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def upload(content=SMALL_CATALOG_CSV, name="catalog.csv"):
    return SimpleUploadedFile(name, content.encode() if isinstance(content, str) else content, "text/csv")


@pytest.fixture
def shop_a():
    business = BusinessFactory()
    return business, api_key_issue(business, name="ci").raw_key


@pytest.fixture
def shop_b():
    business = BusinessFactory()
    return business, api_key_issue(business, name="ci").raw_key


def test_upload_returns_202_and_runs_to_a_status(
    client, catalog_media, shop_a, django_capture_on_commit_callbacks
):
    business, key = shop_a
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            URL, {"file": upload(), "mode": "full", "confirm_full_sync": "true"}, **auth(key)
        )
    assert response.status_code == 202
    body = response.json()
    imp = Import.objects.get(pk=body["id"])
    assert body == {"id": imp.pk, "state": "pending", "status_url": f"{URL}/{imp.pk}"}
    assert response["Location"] == f"{URL}/{imp.pk}"
    assert (imp.business_id, imp.mode, imp.original_filename, imp.embed) == (
        business.pk,
        "full",
        "catalog.csv",
        True,
    )
    assert len(callbacks) == 1  # the Celery task, queued once the row is committed

    imp.embed = False
    imp.save(update_fields=["embed"])
    import_run(import_id=imp.pk)
    status = client.get(f"{URL}/{imp.pk}", **auth(key)).json()
    assert {
        k: status[k] for k in ("id", "filename", "format", "mode", "state", "phase", "rows_done", "error")
    } == {
        "id": imp.pk,
        "filename": "catalog.csv",
        "format": "csv",
        "mode": "full",
        "state": "succeeded",
        "phase": "done",
        "rows_done": 3,
        "error": None,
    }
    assert status["counts"] == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "retired": 0,
        "failed": 0,
        "embedded": 0,
    }


def test_error_report_csv(client, catalog_media, shop_a):
    _, key = shop_a
    response = client.post(
        URL, {"file": upload("id,title,price\n,x,1\nA,ok,zz\nB,fine,2 EUR\n")}, **auth(key)
    )
    import_id = response.json()["id"]
    Import.objects.filter(pk=import_id).update(embed=False)
    import_run(import_id=import_id)
    report = client.get(f"{URL}/{import_id}/errors.csv", **auth(key))
    assert report.status_code == 200
    assert report["Content-Type"] == "text/csv; charset=utf-8"
    assert report["Content-Disposition"] == f'attachment; filename="import-{import_id}-errors.csv"'
    assert report.content.decode() == "row,column,reason\r\n2,id,missing id\r\n3,price,not a price: 'zz'\r\n"


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_AUTHORIZATION": "Bearer nope"}, {"HTTP_AUTHORIZATION": "Basic Zm9vOmJhcg=="}],
    ids=["none", "wrong-key", "wrong-scheme"],
)
def test_upload_without_a_valid_key_is_refused(client, catalog_media, headers):
    response = client.post(URL, {"file": upload()}, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert Import.objects.count() == 0
    assert not any(catalog_media.rglob("*.csv"))


def test_revoked_key_is_refused(client, catalog_media):
    business = BusinessFactory()
    issued = api_key_issue(business, name="old")
    api_key_revoke(business, api_key_id=issued.api_key.pk)
    assert client.post(URL, {"file": upload()}, **auth(issued.raw_key)).status_code == 401
    assert Import.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({}, {"file": "send a file (multipart field 'file') or a url to fetch it from, not both"}),
        (
            {"file": "x", "url": "https://shop.example/feed.csv"},
            {"file": "send a file (multipart field 'file') or a url to fetch it from, not both"},
        ),
        ({"file": "x", "mode": "merge"}, {"mode": "one of upsert, full"}),
        (
            {"file": "x", "format": "docx"},
            {"format": "one of csv, tsv, xlsx, json, jsonl, xml, markdown, text, pdf"},
        ),
        ({"file": "x", "mapping": "[1]"}, {"mapping": 'a JSON object {"source column": "field"}'}),
    ],
)
def test_invalid_uploads(client, catalog_media, shop_a, data, fields):
    _, key = shop_a
    if "file" in data:
        data = {**data, "file": upload()}
    response = client.post(URL, data, **auth(key))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["detail"], body["code"]) == (400, "invalid request", "validation_failed")
    assert {e["field"]: e["message"] for e in body["errors"]} == {f"form.{k}": v for k, v in fields.items()}
    assert Import.objects.count() == 0


def test_oversize_upload_is_413(client, catalog_media, shop_a, settings):
    _, key = shop_a
    settings.CATALOG_MAX_UPLOAD_BYTES = 10
    response = client.post(URL, {"file": upload()}, **auth(key))
    assert response.status_code == 413
    assert response.json()["detail"] == "the file is over the limit of 10 bytes"
    assert Import.objects.count() == 0


def test_tenant_isolation(client, catalog_media, shop_a, shop_b):
    business_a, key_a = shop_a
    business_b, key_b = shop_b
    import_id_b = client.post(URL, {"file": upload()}, **auth(key_b)).json()["id"]
    Import.objects.filter(pk=import_id_b).update(embed=False)
    import_run(import_id=import_id_b)
    # A's key can neither see B's import, nor its error report: 404, exactly like a missing id.
    for path in (f"{URL}/{import_id_b}", f"{URL}/{import_id_b}/errors.csv"):
        response = client.get(path, **auth(key_a))
        assert (response.status_code, response.json()["detail"]) == (404, "not found")
    assert client.get(f"{URL}/999999", **auth(key_a)).status_code == 404
    # A's upload lands in A's catalog only, with the same external ids as B's.
    import_id_a = client.post(
        URL, {"file": upload(SMALL_CATALOG_CSV.replace("Ridgeline 2-person", "A's"))}, **auth(key_a)
    ).json()["id"]
    Import.objects.filter(pk=import_id_a).update(embed=False)
    import_run(import_id=import_id_a)
    assert Import.objects.get(pk=import_id_a).business_id == business_a.pk
    assert Item.objects.get(business=business_b, external_id="TENT-2P").title == "Ridgeline 2-person tent"
    assert Item.objects.get(business=business_a, external_id="TENT-2P").title == "A's tent"
    assert Item.objects.filter(business=business_b).count() == 3
    # And B still sees its own.
    assert client.get(f"{URL}/{import_id_b}", **auth(key_b)).json()["counts"]["created"] == 3
