"""The webhook pages of the admin: owners create an endpoint (its secret shown once), read its deliveries
and attempts and why it was disabled, enable it again, send a test event, delete it; bad input is a 400 with
a message and stores nothing; another business's endpoints are 404 (tests/dashboard/test_permissions.py
walks every route for staff and strangers as well)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from businesses.models import Business, Membership
from outbox.models import EventSubscription, OutboxEvent
from tests.factories import MembershipFactory
from tests.webhooks.conftest import Receiver
from webhooks.dispatch import delivery_attempt
from webhooks.models import EndpointDelivery, WebhookEndpoint
from webhooks.services import endpoint_create, endpoint_disable

pytestmark = pytest.mark.django_db


def owner_client() -> tuple[Client, Business]:
    membership = MembershipFactory(role=Membership.Role.OWNER)
    client = Client()
    client.force_login(membership.user)
    return client, membership.business


def url(business: Business, name: str = "webhooks", **kwargs: Any) -> str:
    return reverse(f"dashboard:{name}", kwargs={"slug": business.slug, **kwargs})


def test_an_owner_creates_an_endpoint_and_sees_its_secret_once(receiver: Receiver) -> None:
    client, business = owner_client()
    response = client.post(
        url(business),
        {
            "url": receiver.url + "/hooks",
            "description": "CRM",
            "events": ["message.created", "conversation.closed"],
        },
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(business=business)
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.secret in response.content.decode()
    assert (endpoint.url, endpoint.description, endpoint.events) == (
        receiver.url + "/hooks",
        "CRM",
        ["conversation.closed", "message.created"],
    )
    assert sorted(EventSubscription.objects.filter(business=business).values_list("type", flat=True)) == [
        "conversation.closed",
        "message.created",
    ]
    # Encrypted at rest; never shown again.
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM webhooks_webhookendpoint WHERE id = %s", [endpoint.pk])
        raw = cursor.fetchone()[0]
    assert raw.startswith("fernet:") and endpoint.secret not in raw
    for page in (url(business), url(business, "webhook_endpoint", endpoint_id=endpoint.pk)):
        shown = client.get(page)
        assert shown.status_code == 200
        assert endpoint.secret not in shown.content.decode()
        assert receiver.url + "/hooks" in shown.content.decode()


@pytest.mark.parametrize(
    ("data", "field_error"),
    [
        ({"url": "not a url", "events": ["message.created"]}, "Enter a valid URL."),
        ({"url": "https://shop.example/hooks", "events": []}, "Choose at least one event."),
        ({"url": "https://shop.example/hooks", "events": ["payment.captured"]}, "Select a valid choice."),
        ({"url": "http://127.0.0.1:9/hooks", "events": ["message.created"]}, "which is not a public address"),
        ({"url": "http://10.0.0.5/hooks", "events": ["message.created"]}, "which is not a public address"),
        ({"url": "ftp://shop.example/hooks", "events": ["message.created"]}, "the URL must start with http"),
        (
            {"url": "https://" + "a" * 600 + ".example/", "events": ["message.created"]},
            "at most 500 characters",
        ),
    ],
)
def test_bad_input_is_a_400_with_a_message_and_stores_nothing(
    settings: Any, data: dict[str, Any], field_error: str
) -> None:
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    client, business = owner_client()
    response = client.post(url(business), data)
    assert response.status_code == 400
    assert field_error in response.content.decode()
    assert not WebhookEndpoint.objects.exists()
    assert not EventSubscription.objects.exists()


def test_the_detail_page_shows_deliveries_attempts_and_why_it_was_disabled(receiver: Receiver) -> None:
    client, business = owner_client()
    endpoint = endpoint_create(business=business, url=receiver.url + "/hooks", events=["message.created"])
    receiver.answer(500)
    assert client.post(url(business, "webhook_endpoint_test", endpoint_id=endpoint.pk)).status_code == 302
    delivery = EndpointDelivery.objects.get(endpoint=endpoint)
    assert delivery.event.type == "webhook.test"
    assert delivery_attempt(delivery_id=delivery.pk, attempts=0) == "failed"
    endpoint_disable(
        business_id=business.pk,
        endpoint_id=endpoint.pk,
        reason="Disabled: it kept failing.",
        now=delivery.created_at,
    )
    page = client.get(url(business, "webhook_endpoint", endpoint_id=endpoint.pk)).content.decode()
    assert "Disabled: it kept failing." in page
    assert "webhook.test" in page and "HTTP 500" in page and "receiver says no" in page
    assert "attempt 1" in page

    assert client.post(url(business, "webhook_endpoint_enable", endpoint_id=endpoint.pk)).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.disabled_reason == ""
    assert EventSubscription.objects.filter(business=business, type="message.created").exists()

    assert client.post(url(business, "webhook_endpoint_delete", endpoint_id=endpoint.pk)).status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert not EndpointDelivery.objects.exists()
    assert not EventSubscription.objects.exists()
    assert OutboxEvent.objects.filter(business=business).count() == 1  # the test event; its delivery is gone


def test_another_business_endpoints_are_404_and_unchanged(receiver: Receiver) -> None:
    client, business = owner_client()
    _, other = owner_client()
    theirs = endpoint_create(business=other, url=receiver.url + "/theirs", events=["message.created"])
    endpoint_disable(
        business_id=other.pk, endpoint_id=theirs.pk, reason="kept failing", now=theirs.created_at
    )
    for name, method in [
        ("webhook_endpoint", "get"),
        ("webhook_endpoint_enable", "post"),
        ("webhook_endpoint_test", "post"),
        ("webhook_endpoint_delete", "post"),
    ]:
        response = getattr(client, method)(url(business, name, endpoint_id=theirs.pk))
        assert response.status_code == 404
    assert receiver.url + "/theirs" not in client.get(url(business)).content.decode()
    theirs.refresh_from_db()
    assert (theirs.is_active, theirs.disabled_reason) == (False, "kept failing")
    assert not EndpointDelivery.objects.exists()
