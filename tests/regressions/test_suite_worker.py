"""End to end: a catalog import through the REST API, run by a REAL Celery worker, queues the business's
regression suite, which the worker generates again from the new data and runs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from businesses.services import api_key_issue
from catalogs.models import Import
from regressions.models import RegressionCase, RegressionRun
from regressions.services import cases_regenerate
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.stack import declare_queues
from tests.regressions.test_suite import CHEAPER_TENT_CSV


def wait_for(predicate: Any, *, log: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(log()[-3000:])


def upload(client: Any, key: str, csv_text: str) -> Import:
    response = client.post(
        "/api/v1/catalog/imports",
        {"file": SimpleUploadedFile("catalog.csv", csv_text.encode())},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 202
    return Import.objects.get(pk=response.json()["id"])


@pytest.mark.django_db(transaction=True)
def test_an_import_by_the_worker_runs_the_suite_against_the_new_data(celery_worker: Any, client: Any) -> None:
    declare_queues()  # the per-test Redis flush removed the queue bindings
    business = BusinessFactory()
    key = api_key_issue(business, name="ci").raw_key
    imports = [upload(client, key, SMALL_CATALOG_CSV)]
    try:
        done = Import.objects.filter(business=business, state__in=["succeeded", "failed"])
        wait_for(lambda: done.count() == 1, log=celery_worker.log)
        # No suite yet: the import's after_import task did nothing.
        assert not RegressionRun.objects.filter(business=business).exists()
        cases_regenerate(business=business)
        imports.append(upload(client, key, CHEAPER_TENT_CSV))
        runs = RegressionRun.objects.filter(business=business, trigger="import")
        wait_for(
            lambda: runs.filter(state__in=["succeeded", "failed"]).exists(),
            log=celery_worker.log,
            seconds=180,
        )
        assert done.count() == 2
        run = runs.get()
        assert (run.state, run.error_message, run.total, run.passed, run.failed) == ("succeeded", "", 6, 6, 0)
        case = RegressionCase.objects.get(business=business, kind="price", source_key="item:TENT-2P")
        assert case.expected["price"] == "229.00"
        assert "229.00 EUR" in run.results.get(case=case).reply_text
    finally:
        for imp in imports:
            imp.refresh_from_db()
            imp.file.delete(save=False)
