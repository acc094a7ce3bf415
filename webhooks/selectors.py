"""Reads for the webhook pages. Every function takes the business first."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from businesses.models import Business
from businesses.selectors import get_scoped_or_404, scoped
from webhooks.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint

RECENT_DELIVERIES = 50


def endpoints(business: Business) -> QuerySet[WebhookEndpoint]:
    return scoped(business, WebhookEndpoint.objects.all()).order_by("-created_at")


def endpoint_or_404(business: Business, endpoint_id: int) -> WebhookEndpoint:
    return get_scoped_or_404(business, WebhookEndpoint.objects.all(), pk=endpoint_id)


def recent_deliveries(business: Business, endpoint: WebhookEndpoint) -> list[EndpointDelivery]:
    """The endpoint's latest deliveries, newest first, each with its event and its attempts (in order)."""
    return list(
        scoped(business, EndpointDelivery.objects.filter(endpoint=endpoint))
        .select_related("event")
        .prefetch_related(Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("number")))
        .order_by("-created_at", "-pk")[:RECENT_DELIVERIES]
    )
