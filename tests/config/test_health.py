from __future__ import annotations

import pytest
from django.test import Client
from django.test.utils import override_settings

from devstack.handles import free_port

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_lives(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_names_each_failing_check_and_answers_503(client: Client) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    # The details are for the operator's token only (tests/security/test_disclosure.py: the public answer).
    with override_settings(LLAMA_POOL=dead, METRICS_TOKEN="ops-token"):
        response = client.get("/readyz", HTTP_AUTHORIZATION="Bearer ops-token")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "worker", "inference"}
    assert checks["database"]["ok"] is True
    assert checks["database"]["detail"].startswith("pgvector 0.")
    assert checks["redis"] == {**checks["redis"], "ok": True, "detail": "ping ok"}
    assert checks["worker"]["ok"] is False
    assert checks["worker"]["detail"] == "no Celery worker answered a ping"
    assert checks["inference"]["ok"] is False


def test_readyz_refuses_post(client: Client) -> None:
    assert client.post("/readyz").status_code == 405
