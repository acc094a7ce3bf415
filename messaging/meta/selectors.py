"""Reads for channel accounts and webhook deliveries.

Tenant reads take the business first. The routing reads (``route_account``, ``signing_accounts``,
``verify_tokens``) cannot: a webhook names an account id, not a business, and finding the business is
exactly their job. They only ever return active accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse

from businesses.models import Business
from messaging.models import ChannelAccount, WebhookDelivery

PLATFORMS = ("whatsapp", "messenger", "instagram")


def mask_secret(value: str) -> str:
    """What the admin may show of a token: its last 4 characters of a long value, nothing of a short one."""
    if not value:
        return ""
    if len(value) < 16:
        return "••••"
    return "••••" + value[-4:]


@dataclass(frozen=True)
class ChannelAccountSummary:
    """A channel account as the admin shows it: ids in clear, secrets masked."""

    id: int
    kind: str
    name: str
    routing_id: str
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    page_id: str
    instagram_account_id: str
    access_token: str  # masked
    app_secret: str  # masked; empty = the deployment's META_APP_SECRET
    verify_token: str  # masked
    template_name: str
    template_language: str
    last_delivery_at: Any
    webhook_url: str


def _summary(account: ChannelAccount) -> ChannelAccountSummary:
    return ChannelAccountSummary(
        id=account.pk,
        kind=account.kind,
        name=account.name,
        routing_id=account.routing_id,
        waba_id=account.waba_id,
        phone_number_id=account.phone_number_id,
        display_phone_number=account.display_phone_number,
        page_id=account.page_id,
        instagram_account_id=account.instagram_account_id,
        access_token=mask_secret(account.access_token),
        app_secret=mask_secret(account.app_secret),
        verify_token=mask_secret(account.verify_token),
        template_name=account.template_name,
        template_language=account.template_language,
        last_delivery_at=account.last_delivery_at,
        webhook_url=webhook_url(account.kind),
    )


def channel_accounts_list(business: Business) -> list[ChannelAccountSummary]:
    """The business's connected (active) accounts, secrets masked."""
    accounts = ChannelAccount.objects.filter(business=business, active=True).order_by("kind", "pk")
    return [_summary(account) for account in accounts]


def channel_account_summary(business: Business, account_id: int) -> ChannelAccountSummary | None:
    account = ChannelAccount.objects.filter(business=business, pk=account_id, active=True).first()
    return _summary(account) if account else None


def channel_account_for_sending(business: Business, kind: str) -> ChannelAccount | None:
    """The active account a reply on this channel goes out through (the most recently connected)."""
    return ChannelAccount.objects.filter(business=business, kind=kind, active=True).order_by("-pk").first()


def webhook_url(platform: str) -> str:
    """The callback URL to paste into Meta's dashboard for this platform."""
    return settings.PUBLIC_URL + reverse("meta-webhook", kwargs={"platform": platform})


def webhook_urls() -> dict[str, str]:
    return {platform: webhook_url(platform) for platform in PLATFORMS}


# --- Routing (before the business is known) ------------------------------------------------------------------


def route_account(platform: str, account_id: str) -> ChannelAccount | None:
    """The active account a delivery's id belongs to: phone number id (WhatsApp, or the WABA id), page id
    (Messenger), Instagram account id (Instagram, or the page id of a Facebook-Login setup)."""
    if not account_id:
        return None
    qs = ChannelAccount.objects.select_related("business").filter(kind=platform, active=True)
    if platform == "whatsapp":
        return qs.filter(phone_number_id=account_id).first()
    if platform == "messenger":
        return qs.filter(page_id=account_id).first()
    return qs.filter(instagram_account_id=account_id).first() or qs.filter(page_id=account_id).first()


def signing_accounts(ids: set[str]) -> list[ChannelAccount]:
    """Active accounts with their own app secret that a delivery naming these ids may come for."""
    if not ids:
        return []
    return list(
        ChannelAccount.objects.filter(active=True)
        .exclude(app_secret="")
        .filter(
            Q(phone_number_id__in=ids)
            | Q(waba_id__in=ids)
            | Q(page_id__in=ids)
            | Q(instagram_account_id__in=ids)
        )
    )


def verify_tokens(platform: str) -> list[str]:
    """Per-account verify tokens accepted by the handshake of this endpoint (``meta``: all)."""
    qs = ChannelAccount.objects.filter(active=True).exclude(verify_token="")
    if platform in PLATFORMS:
        qs = qs.filter(kind=platform)
    return list(qs.values_list("verify_token", flat=True))


def webhook_delivery_counts() -> dict[str, int]:
    """Deliveries per state (operators: a growing ``pending`` means no worker consumes the queue)."""
    counts = dict.fromkeys(WebhookDelivery.State.values, 0)
    for row in WebhookDelivery.objects.values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts
