"""Accounts and the admin's own surfaces: the dashboard websocket's origin check, full sync for owners only
after a confirmation, and sign-in throttling that cannot be bypassed and reveals no account."""

from __future__ import annotations

import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from businesses.models import Membership
from catalogs.models import Import
from config.asgi import application
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

# --- The dashboard websocket checks the page's origin (cross-site websocket hijacking) ---------------------


@database_sync_to_async
def _member_with_import() -> tuple[Any, Any, Import]:
    membership = MembershipFactory(role=Membership.Role.STAFF)
    imp = Import.objects.create(
        business=membership.business,
        file=SimpleUploadedFile("feed.csv", b"id,title\n1,x\n"),
        original_filename="feed.csv",
        state=Import.State.SUCCEEDED,
        phase=Import.Phase.DONE,
    )
    client = Client()
    client.force_login(membership.user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
    return membership, cookie, imp


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("origin", "opens"),
    [
        (b"http://localhost:8000", True),
        (b"http://127.0.0.1:8000", True),
        (b"https://evil.example", False),
        (b"http://localhost.evil.example", False),
        (b"null", False),
        (None, False),
    ],
)
async def test_the_dashboard_socket_opens_only_from_this_service_s_own_pages(
    origin: bytes | None, opens: bool
) -> None:
    membership, cookie, imp = await _member_with_import()
    headers = [(b"cookie", cookie)] + ([(b"origin", origin)] if origin is not None else [])
    communicator = WebsocketCommunicator(
        application, f"/ws/app/{membership.business.slug}/imports/{imp.pk}/", headers=headers
    )
    connected, _ = await communicator.connect()
    assert connected is opens
    if connected:
        first = await communicator.receive_json_from(timeout=5)
        assert first["type"] == "import.status"
    await communicator.disconnect()


# --- Full sync (retires every item missing from the file): owners only, after a confirmation ---------------


def _upload(client: Client, slug: str, **extra: str) -> Any:
    feed = SimpleUploadedFile("feed.csv", b"id,title,price\nSKU-9,Boot,10 EUR\n", content_type="text/csv")
    return client.post(
        f"/app/{slug}/catalog/upload/", {"file": feed, **extra}, HTTP_ACCEPT="application/json"
    )


@pytest.mark.django_db
def test_staff_cannot_run_a_full_sync() -> None:
    staff = MembershipFactory(role=Membership.Role.STAFF)
    client = Client()
    client.force_login(staff.user)
    response = _upload(client, staff.business.slug, mode="full", confirm_full_sync="on")
    assert response.status_code == 403
    assert response.json()["errors"]["mode"][0]["code"] == "owner_only"
    # A plain form post (no script) is refused the same way.
    feed = SimpleUploadedFile("feed.csv", b"id,title\nSKU-9,Boot\n", content_type="text/csv")
    plain = {"file": feed, "mode": "full", "confirm_full_sync": "on"}
    assert client.post(f"/app/{staff.business.slug}/catalog/upload/", plain).status_code == 403
    assert not Import.objects.filter(business=staff.business).exists()


@pytest.mark.django_db
def test_staff_can_still_add_and_update_items() -> None:
    staff = MembershipFactory(role=Membership.Role.STAFF)
    client = Client()
    client.force_login(staff.user)
    response = _upload(client, staff.business.slug, mode="upsert")
    assert response.status_code == 201, response.content
    assert list(Import.objects.filter(business=staff.business).values_list("mode", flat=True)) == ["upsert"]


@pytest.mark.django_db
def test_an_owner_s_full_sync_needs_the_confirmation() -> None:
    owner = MembershipFactory(role=Membership.Role.OWNER)
    client = Client()
    client.force_login(owner.user)
    response = _upload(client, owner.business.slug, mode="full")
    assert response.status_code == 400
    assert "Confirm the full sync" in response.json()["errors"]["confirm_full_sync"][0]["message"]
    assert not Import.objects.filter(business=owner.business).exists()

    response = _upload(client, owner.business.slug, mode="full", confirm_full_sync="on")
    assert response.status_code == 201, response.content
    assert list(Import.objects.filter(business=owner.business).values_list("mode", flat=True)) == ["full"]


# --- Sign-in throttling: per account and per address, in Redis ---------------------------------------------


def _login(client: Client, username: str, password: str, address: str = "203.0.113.7") -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_sign_in_is_throttled_per_account_whatever_the_letter_case(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 100
    user = UserFactory(username="owner@shop.example")
    client = Client()
    for n, spelling in enumerate(["owner@shop.example", "OWNER@shop.example", "Owner@Shop.Example"]):
        response = _login(client, spelling, "wrong-password", address=f"198.51.100.{n}")
        assert response.status_code == 200
        assert "Please enter a correct email and password" in response.content.decode()
    # Now even the right password, from a new address and in another case, is refused for a while.
    response = _login(client, "OWNER@SHOP.EXAMPLE", "correct-horse-battery", address="198.51.100.99")
    assert response.status_code == 200
    assert "Too many sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert user.last_login is None


@pytest.mark.django_db
def test_sign_in_is_throttled_per_address(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 100
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    UserFactory(username="owner@shop.example")
    client = Client()
    for n in range(3):
        _login(client, f"guess{n}@shop.example", "wrong-password")
    response = _login(client, "owner@shop.example", "correct-horse-battery")
    assert "Too many sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address is not held back by this one's failures.
    response = _login(Client(), "owner@shop.example", "correct-horse-battery", address="192.0.2.1")
    assert response.status_code == 302


@pytest.mark.django_db
def test_throttling_reveals_no_account(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 2
    settings.LOGIN_FAILURES_PER_ADDRESS = 100
    UserFactory(username="owner@shop.example")
    pages = {}
    for username in ("owner@shop.example", "nobody@shop.example"):
        client = Client()
        for n in range(3):
            response = _login(client, username, "wrong-password", address=f"198.51.100.{n}")
        page = response.content.decode().replace(username, "EMAIL")
        pages[username] = re.sub(r'(csrfmiddlewaretoken" value="|nonce=")[^"]+', r"\1", page)
    assert "Too many sign-in attempts" in pages["owner@shop.example"]
    assert pages["owner@shop.example"] == pages["nobody@shop.example"]


@pytest.mark.django_db
def test_a_successful_sign_in_is_case_insensitive_and_clears_the_account_s_failures(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 100
    UserFactory(username="owner@shop.example")
    client = Client()
    _login(client, "owner@shop.example", "wrong-password")
    _login(client, "owner@shop.example", "wrong-password")
    assert _login(client, "Owner@Shop.example", "correct-horse-battery").status_code == 302
    client.logout()
    _login(client, "owner@shop.example", "wrong-password")
    _login(client, "owner@shop.example", "wrong-password")
    assert _login(client, "owner@shop.example", "correct-horse-battery").status_code == 302


@pytest.mark.django_db
def test_the_import_api_runs_a_full_sync_only_when_confirmed() -> None:
    from businesses.services import api_key_issue

    business = BusinessFactory()
    secret = api_key_issue(business, name="nightly sync").raw_key
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    feed = SimpleUploadedFile("feed.csv", b"id,title\nSKU-9,Boot\n", content_type="text/csv")
    response = Client().post("/api/v1/catalog/imports", {"file": feed, "mode": "full"}, **auth)
    assert response.status_code == 400
    assert "form.confirm_full_sync" in [error["field"] for error in response.json()["errors"]]
    assert not Import.objects.filter(business=business).exists()
    feed.seek(0)
    response = Client().post(
        "/api/v1/catalog/imports", {"file": feed, "mode": "full", "confirm_full_sync": "true"}, **auth
    )
    assert response.status_code == 202, response.content
    assert list(Import.objects.filter(business=business).values_list("mode", flat=True)) == ["full"]
