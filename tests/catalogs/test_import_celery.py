"""End to end: a REST upload is imported by a REAL Celery worker (queue ``ingest``), embeddings included."""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from businesses.services import api_key_issue
from catalogs.models import Import, Item
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.stack import declare_queues


@pytest.mark.django_db(transaction=True)
def test_upload_is_imported_by_the_worker(celery_worker, client):
    declare_queues()  # the per-test Redis flush removed the queue bindings
    business = BusinessFactory()
    key = api_key_issue(business, name="ci").raw_key
    # The worker reads the file from its own MEDIA_ROOT (the default): the test removes it afterwards.
    response = client.post(
        "/api/v1/catalog/imports",
        {
            "file": SimpleUploadedFile("catalog.csv", SMALL_CATALOG_CSV.encode()),
            "mode": "full",
            "confirm_full_sync": "true",
        },
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 202
    imp = Import.objects.get(pk=response.json()["id"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            imp.refresh_from_db()
            if imp.state in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert (imp.state, imp.error_message) == ("succeeded", ""), celery_worker.log()[-3000:]
        assert (imp.created_count, imp.failed_count, imp.embedded_count) == (3, 0, 3)
        assert Item.objects.filter(business=business, embedding__isnull=False).count() == 3
        status = client.get(f"/api/v1/catalog/imports/{imp.pk}", HTTP_AUTHORIZATION=f"Bearer {key}").json()
        assert (status["state"], status["phase"], status["counts"]["embedded"]) == ("succeeded", "done", 3)
    finally:
        imp.file.delete(save=False)
