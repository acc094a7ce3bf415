"""What the public can learn: /readyz says ok or not ok; /demo/<slug>/ only for businesses that opt in;
Django's admin for superusers only, with secrets it never shows (docs/security.md, "Disclosure")."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from businesses.admin_site import SuperuserAdminSite, WriteOnlySecretsAdmin
from businesses.crypto import EncryptedTextField
from businesses.demo import DEMO_SLUG
from businesses.models import Business
from config import health
from devstack.handles import free_port
from inference.models import InferenceEndpoint
from tests.factories import BusinessFactory, MembershipFactory, UserFactory
from tests.inference_server import InferenceServer

pytestmark = pytest.mark.django_db


# --- /readyz ------------------------------------------------------------------------------------------------


def test_public_readyz_says_not_ok_and_nothing_else(client: Client, settings: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings.LLAMA_POOL = dead
    settings.METRICS_TOKEN = "ops-token"
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "ops-token"}):
        response = client.get("/readyz", **headers)
        assert response.status_code == 503
        assert response.json() == {"status": "not ok"}
        assert "127.0.0.1" not in response.content.decode()


def test_readyz_details_need_the_token_even_in_debug(client: Client, settings: Any) -> None:
    settings.LLAMA_POOL = f"http://127.0.0.1:{free_port()}"
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True
    response = client.get("/readyz", HTTP_AUTHORIZATION="Bearer ")
    assert response.json() == {"status": "not ok"}


def test_public_readyz_says_ok_when_every_check_passes(
    client: Client,
    inference_server: InferenceServer,
    llama_pool: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llama_pool(inference_server)
    monkeypatch.setitem(health.CHECKS, "worker", lambda: (True, "1 worker(s)"))
    response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_does_not_probe_the_pool_on_every_request(
    client: Client,
    inference_server_factory: Callable[..., InferenceServer],
    llama_pool: Callable[..., None],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servers = [inference_server_factory(), inference_server_factory()]
    llama_pool(*servers)
    settings.METRICS_TOKEN = "ops-token"
    # No Celery worker here: its ping would wait out 0.5 s per request, and the test wants them within the
    # probe interval (inference.health.READINESS_PROBE_INTERVAL, 5 s).
    monkeypatch.setitem(health.CHECKS, "worker", lambda: (True, "1 worker(s)"))
    for _ in range(10):
        client.get("/readyz")
        client.get("/readyz", HTTP_AUTHORIZATION="Bearer ops-token")
    # One probe round (GET /health, GET /v1/models) per endpoint for twenty requests, not twenty.
    for server in servers:
        assert server.stats()["requests_by_path"] == {"/health": 1, "/v1/models": 1}
    details = client.get("/readyz", HTTP_AUTHORIZATION="Bearer ops-token").json()
    assert details["checks"]["inference"] == {
        **details["checks"]["inference"],
        "ok": True,
        "detail": "2/2 endpoint(s) ready",
    }


# --- /demo/<slug>/ ------------------------------------------------------------------------------------------


def test_the_demo_page_is_served_only_for_businesses_that_opted_in(client: Client) -> None:
    quiet = BusinessFactory()
    assert quiet.demo_page_enabled is False
    assert client.get(f"/demo/{quiet.slug}/").status_code == 404
    public = BusinessFactory(demo_page_enabled=True)
    assert client.get(f"/demo/{public.slug}/").status_code == 200


def test_the_owner_turns_the_demo_page_on_and_off_in_the_dashboard(client: Client) -> None:
    membership = MembershipFactory()
    shop = membership.business
    client.force_login(membership.user)
    install = client.get(reverse("dashboard:install", kwargs={"slug": shop.slug})).content.decode()
    assert 'name="demo_page_enabled"' in install
    url = reverse("dashboard:install_demo_page", kwargs={"slug": shop.slug})
    assert client.post(url, {"demo_page_enabled": "on"}).status_code == 302
    shop.refresh_from_db()
    assert shop.demo_page_enabled is True
    assert client.get(f"/demo/{shop.slug}/").status_code == 200
    assert client.post(url, {}).status_code == 302
    shop.refresh_from_db()
    assert shop.demo_page_enabled is False
    assert client.get(f"/demo/{shop.slug}/").status_code == 404


def test_no_one_else_can_turn_a_business_demo_page_on(client: Client) -> None:
    owner_a = MembershipFactory()
    business_b = BusinessFactory()
    staff_of_b = MembershipFactory(business=business_b, role="staff")
    url_b = reverse("dashboard:install_demo_page", kwargs={"slug": business_b.slug})
    client.force_login(owner_a.user)
    assert client.post(url_b, {"demo_page_enabled": "on"}).status_code == 404
    client.force_login(staff_of_b.user)
    assert client.post(url_b, {"demo_page_enabled": "on"}).status_code == 403
    Client().post(url_b, {"demo_page_enabled": "on"})
    business_b.refresh_from_db()
    assert business_b.demo_page_enabled is False
    assert client.get(f"/demo/{business_b.slug}/").status_code == 404


def test_the_seeded_demo_business_has_its_demo_page_on(client: Client, settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert Business.objects.get(slug=DEMO_SLUG).demo_page_enabled is True
    assert client.get(f"/demo/{DEMO_SLUG}/").status_code == 200


# --- Django's admin -----------------------------------------------------------------------------------------


def test_django_admin_is_for_superusers_only(client: Client) -> None:
    BusinessFactory(name="Tenant Secret Shop")
    assert isinstance(admin.site, SuperuserAdminSite)
    client.force_login(UserFactory(is_staff=True, is_superuser=False))
    for path in ("/django-admin/", "/django-admin/businesses/business/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/django-admin/login/")
        assert "Tenant Secret Shop" not in response.content.decode()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.get("/django-admin/businesses/business/")
    assert response.status_code == 200
    assert "Tenant Secret Shop" in response.content.decode()


def test_admin_never_shows_a_secret_and_blank_keeps_it(client: Client) -> None:
    endpoint = InferenceEndpoint.objects.create(
        name="gpu-1", base_url="http://gpu-1.internal:8000", api_key="sk-live-very-secret"
    )
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = f"/django-admin/inference/inferenceendpoint/{endpoint.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "sk-live-very-secret" not in html
    assert "fernet:" not in html
    assert 'type="password" name="api_key"' in html
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data["enabled"] = "on" if data.get("enabled") else ""
    data["api_key"] = ""
    data["name"] = "gpu-1 renamed"
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint.refresh_from_db()
    assert (endpoint.name, endpoint.api_key) == ("gpu-1 renamed", "sk-live-very-secret")
    data["api_key"] = "sk-rotated"
    assert client.post(url, data).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.api_key == "sk-rotated"


def test_every_admin_of_a_model_with_secrets_keeps_them_write_only() -> None:
    for model, model_admin in admin.site._registry.items():
        if any(isinstance(field, EncryptedTextField) for field in model._meta.get_fields()):
            assert isinstance(model_admin, WriteOnlySecretsAdmin), model
