"""Content-Security-Policy on the dashboard, the demo storefront and Django's admin; none of our pages needs an
inline script; the widget's script is still served to other sites (docs/security.md, "Content-Security-Policy")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from businesses.models import Business
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(settings.BASE_DIR)
# A <script> element without src (inline code), except JSON data blocks (json_script), which never run.
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def _directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def _assert_strict(response: object) -> None:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    directives = _directives(header)
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in header


def _assert_no_inline_script(html: str) -> None:
    assert INLINE_SCRIPT.findall(html) == []
    assert EVENT_HANDLER.findall(html) == []
    assert "javascript:" not in html.lower()


def test_no_template_holds_an_inline_script_or_event_handler() -> None:
    templates = [
        path
        for app in ("businesses", "catalogs", "agents", "messaging", "dashboard", "config")
        for path in (ROOT / app).rglob("*.html")
    ]
    assert templates, "no templates found"
    for path in templates:
        text = path.read_text()
        assert INLINE_SCRIPT.findall(text) == [], path
        assert EVENT_HANDLER.findall(text) == [], path


def test_dashboard_pages_send_a_strict_policy(client: Client) -> None:
    membership = MembershipFactory()
    slug = membership.business.slug
    client.force_login(membership.user)
    for name in (
        "overview",
        "install",
        "agent",
        "catalog",
        "catalog_items",
        "inbox",
        "channels",
        "analytics",
    ):
        response = client.get(reverse(f"dashboard:{name}", kwargs={"slug": slug}))
        assert response.status_code == 200, name
        _assert_strict(response)
        _assert_no_inline_script(response.content.decode())
    login = Client().get(reverse("dashboard:login"))
    _assert_strict(login)
    _assert_no_inline_script(login.content.decode())


def test_the_sockets_of_the_page_host_are_allowed(client: Client) -> None:
    response = Client().get(reverse("dashboard:login"))
    assert _directives(response["Content-Security-Policy"])["connect-src"] == ["'self'", "ws://testserver"]
    secure = Client().get(reverse("dashboard:login"), secure=True)
    assert _directives(secure["Content-Security-Policy"])["connect-src"] == ["'self'", "wss://testserver"]


def test_the_demo_page_sends_a_strict_policy(client: Client) -> None:
    shop = BusinessFactory(allowed_origins=["http://testserver"])
    Business.objects.filter(pk=shop.pk).update(demo_page_enabled=True)
    response = client.get(f"/demo/{shop.slug}/")
    assert response.status_code == 200
    _assert_strict(response)
    html = response.content.decode()
    _assert_no_inline_script(html)
    # The widget it embeds comes from this origin, which script-src 'self' allows.
    assert '<script src="http://testserver/widget.js"' in html


def test_django_admin_pages_send_a_strict_policy(client: Client) -> None:
    response = client.get("/django-admin/login/")
    _assert_strict(response)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.get("/django-admin/")
    assert response.status_code == 200
    _assert_strict(response)


def test_the_widget_script_is_still_served_to_other_sites(client: Client) -> None:
    response = client.get("/widget.js", HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"
    # No page policy on the script: the embedding site's own policy governs it there.
    assert "Content-Security-Policy" not in response
