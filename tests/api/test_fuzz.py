"""Schema-driven bad input (schemathesis, offline: the Django app called in-process through WSGI): every
operation of /api/v1/schema/ gets generated requests, valid and invalid (wrong types, missing fields, huge
values, odd strings), with a key that has every scope. None may answer 5xx, and every error is an RFC 9457
problem whose ``status`` is the response's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from config.api import api
from tests.fixtures.api import Tenant

SCHEMA = schemathesis.openapi.from_dict(json.loads(json.dumps(api.get_openapi_schema(), default=str)))
SCHEMA.app = get_wsgi_application()


@pytest.fixture
def fuzz_tenant(tenant: Tenant, settings: Any) -> Iterator[Tenant]:
    settings.API_RATE_LIMIT_PER_MINUTE = 1_000_000
    # As Django's test client does: a request must not close the test's connection (and its transaction).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield tenant
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@SCHEMA.parametrize()
@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_operation_fails_on_bad_input(case: Any, fuzz_tenant: Tenant, catalog_media: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {fuzz_tenant.key}"})
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"], (case.method, case.path)
        body = response.json()
        assert body["status"] == response.status_code
        assert body["title"] and body["detail"]
