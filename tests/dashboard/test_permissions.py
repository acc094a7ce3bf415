"""Permission tests generated over every URL of the admin (the URL resolver is walked, not listed by hand).

For each route under /app/<slug>/: anonymous -> login redirect; a member of business A -> 404 on every
object of business B (and on B's slug); staff -> 403 on owner-only pages; and on every denial nothing
about B (or A) has changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from agents.models import Agent
from businesses.models import ApiKey, Business, Invitation, Membership
from catalogs.models import FeedSource, Import, Item
from dashboard.permissions import Access
from messaging.models import ChannelAccount, Conversation, Message
from regressions.models import RegressionCase, RegressionRun
from tests.dashboard.conftest import OBJECT_MAKERS, Tenant
from webhooks.models import EndpointDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    access: Access | None

    def __str__(self) -> str:
        return self.name

    def url(self, slug: str, objects: dict[str, int]) -> str:
        kwargs: dict[str, Any] = {
            "slug": slug,
            **{k: v for k, v in PLAIN_KWARGS.items() if f":{k}>" in self.pattern},
        }
        assert self.access is not None
        for kwarg, kind in self.access.objects.items():
            kwargs[kwarg] = objects[kind]
        return reverse(f"dashboard:{self.name}", kwargs=kwargs)


def _walk(patterns: list[URLPattern | URLResolver], prefix: str, namespace: str | None) -> list[Route]:
    routes = []
    for p in patterns:
        if isinstance(p, URLResolver):
            routes += _walk(p.url_patterns, prefix + str(p.pattern), p.namespace or namespace)
        elif namespace == "dashboard":
            routes.append(
                Route(p.name or "", prefix + str(p.pattern), getattr(p.callback, "dashboard_access", None))
            )
    return routes


ALL_ROUTES = _walk(get_resolver().url_patterns, "", None)
APP_ROUTES = [r for r in ALL_ROUTES if "<slug:slug>" in r.pattern]
OWNER_ROUTES = [r for r in APP_ROUTES if r.access and r.access.role == "owner"]
MEMBER_ROUTES = [r for r in APP_ROUTES if r.access and r.access.role == "member"]
OBJECT_ROUTES = [r for r in APP_ROUTES if r.access and r.access.objects]
# URL keyword arguments that name no row (values for the generated requests).
PLAIN_KWARGS = {"kind": "whatsapp"}
# A POST body that would change something if a check were missing.
HOSTILE_POST = {
    "origins": "https://evil.example",
    "name": "stolen",
    "text": "hi from a stranger",
    "mode": "full",
    "theme_color": "#000000",
    "theme_position": "left",
    "theme_dark_mode": "dark",
    "demo_page_enabled": "on",
    "whatsapp-kind": "whatsapp",
    "whatsapp-phone_number_id": "5550001",
    "whatsapp-access_token": "EAAG-stolen-token-000000",
    "whatsapp-verify_token": "stolen-verify-token-0000",
    "email": "intruder@evil.example",
    "role": "owner",
    "url": "https://evil.example/feed.csv",
    "kind": "feed",
    "interval_minutes": "15",
    "shrink_threshold_percent": "100",
    "events": ["message.created"],
}


def test_the_walk_finds_the_admin() -> None:
    names = {r.name for r in APP_ROUTES}
    assert {
        "overview",
        "catalog",
        "inbox_conversation",
        "inbox_takeover",
        "api_key_revoke",
        "analytics",
        "team",
        "team_invitation_revoke",
    } <= names
    assert len(APP_ROUTES) >= 20


@pytest.mark.parametrize("route", APP_ROUTES, ids=str)
def test_every_business_route_declares_its_access(route: Route) -> None:
    assert isinstance(route.access, Access), f"{route.pattern} is not wrapped in member_view"
    for kind in route.access.objects.values():
        assert kind in OBJECT_MAKERS, f"{route.name}: no test maker for object kind {kind!r}"


def _send(client: Client, method: str, url: str) -> Any:
    return client.post(url, HOSTILE_POST) if method == "post" else client.get(url)


def _snapshot(business: Business) -> tuple[object, ...]:
    """Everything a forged request could change in a business."""
    business.refresh_from_db()
    agent = Agent.objects.filter(business=business).first()
    return (
        agent.theme() if agent else None,
        business.allowed_origins,
        business.demo_page_enabled,
        business.name,
        sorted(ApiKey.objects.filter(business=business).values_list("pk", "name", "revoked_at")),
        sorted(Conversation.objects.filter(business=business).values_list("pk", "state", "handoff_reason")),
        Message.objects.filter(business=business).count(),
        sorted(Import.objects.filter(business=business).values_list("pk", "state")),
        sorted(
            FeedSource.objects.filter(business=business).values_list(
                "pk", "url", "interval_minutes", "shrink_threshold_percent", "is_active", "next_run_at"
            )
        ),
        Item.objects.filter(business=business).count(),
        sorted(ChannelAccount.objects.filter(business=business).values_list("pk", "active", "access_token")),
        sorted(Invitation.objects.filter(business=business).values_list("pk", "email", "role", "revoked_at")),
        sorted(Membership.objects.filter(business=business).values_list("user_id", "role")),
        sorted(RegressionRun.objects.filter(business=business).values_list("pk", "state")),
        RegressionCase.objects.filter(business=business).count(),
        sorted(WebhookEndpoint.objects.filter(business=business).values_list("pk", "url", "is_active")),
        EndpointDelivery.objects.filter(business=business).count(),
    )


@pytest.mark.parametrize("route", APP_ROUTES, ids=str)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_is_sent_to_login(route: Route, method: str, tenant_a: Tenant) -> None:
    url = route.url(tenant_a.business.slug, tenant_a.objects)
    before = _snapshot(tenant_a.business)
    response = _send(Client(), method, url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"
    assert _snapshot(tenant_a.business) == before


@pytest.mark.parametrize("route", APP_ROUTES, ids=str)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_member_of_a_gets_404_on_business_b(
    route: Route, method: str, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    client = Client()
    client.force_login(tenant_a.owner)
    before = _snapshot(tenant_b.business)
    response = _send(client, method, route.url(tenant_b.business.slug, tenant_b.objects))
    assert response.status_code == 404
    assert _snapshot(tenant_b.business) == before


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=str)
@pytest.mark.parametrize("method", ["get", "post"])
def test_b_objects_under_a_slug_are_404(
    route: Route, method: str, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    client = Client()
    client.force_login(tenant_a.owner)
    before_a, before_b = _snapshot(tenant_a.business), _snapshot(tenant_b.business)
    response = _send(client, method, route.url(tenant_a.business.slug, tenant_b.objects))
    assert response.status_code == 404
    assert (_snapshot(tenant_a.business), _snapshot(tenant_b.business)) == (before_a, before_b)


@pytest.mark.parametrize("route", OWNER_ROUTES, ids=str)
@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_get_403_on_owner_pages(route: Route, method: str, tenant_a: Tenant) -> None:
    client = Client()
    client.force_login(tenant_a.staff)
    before = _snapshot(tenant_a.business)
    response = _send(client, method, route.url(tenant_a.business.slug, tenant_a.objects))
    assert response.status_code == 403
    assert _snapshot(tenant_a.business) == before


@pytest.mark.parametrize("route", MEMBER_ROUTES, ids=str)
def test_staff_may_open_member_pages(route: Route, tenant_a: Tenant) -> None:
    client = Client()
    client.force_login(tenant_a.staff)
    response = client.get(route.url(tenant_a.business.slug, tenant_a.objects))
    # 405: the route takes POST only; the permission check has already let staff through by then.
    assert response.status_code in (200, 405), response.status_code


@pytest.mark.parametrize("route", [r for r in APP_ROUTES if r.access], ids=str)
def test_owners_may_open_every_page(route: Route, tenant_a: Tenant) -> None:
    client = Client()
    client.force_login(tenant_a.owner)
    response = client.get(route.url(tenant_a.business.slug, tenant_a.objects))
    assert response.status_code in (200, 405), response.status_code


def test_staff_do_not_see_owner_pages_in_the_menu(tenant_a: Tenant) -> None:
    client = Client()
    client.force_login(tenant_a.staff)
    html = client.get(f"/app/{tenant_a.business.slug}/").content.decode()
    assert f"/app/{tenant_a.business.slug}/inbox/" in html
    assert f"/app/{tenant_a.business.slug}/analytics/" not in html
    assert f"/app/{tenant_a.business.slug}/api-keys/" not in html
    assert f"/app/{tenant_a.business.slug}/team/" not in html
    assert f"/app/{tenant_a.business.slug}/feeds/" not in html
