"""Reads for channel accounts and webhook deliveries.

Tenant reads take the business first. The routing reads (``route_account``, ``own_app_secrets``,
``verify_tokens``) cannot: a webhook names an account id, not a business, and finding the business is
exactly their job. They only ever return active accounts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet
from django.urls import reverse

from businesses.models import Business
from messaging.models import ChannelAccount, OutboundPart, WebhookDelivery

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


@dataclass(frozen=True)
class SigningKey:
    """One app secret of tenants that bring their own Meta app, and the accounts it signs for: (account id,
    the ids a delivery for it names)."""

    secret: str
    accounts: tuple[tuple[int, frozenset[str]], ...]


def own_app_secrets() -> list[SigningKey]:
    """Active accounts with their own app secret, grouped by secret (decrypted here: one query)."""
    groups: dict[str, list[tuple[int, frozenset[str]]]] = {}
    for account in ChannelAccount.objects.filter(active=True).exclude(app_secret="").order_by("pk"):
        if not account.app_secret:
            continue
        ids = (account.phone_number_id, account.waba_id, account.page_id, account.instagram_account_id)
        groups.setdefault(account.app_secret, []).append((account.pk, frozenset(i for i in ids if i)))
    return [SigningKey(secret, tuple(accounts)) for secret, accounts in groups.items()]


# Tenants' own app secrets, decrypted, in this process's memory for WEBHOOK_SECRET_CACHE_SECONDS: a delivery
# not signed by the deployment's secret is checked against them without a query or a decryption, so forged
# requests cost hashing only. A connect or disconnect in this process forgets them at once; other processes
# see it within the TTL (a delivery refused meanwhile is retried by Meta).
_keys: tuple[float, list[SigningKey]] | None = None
_keys_lock = threading.Lock()


def signing_keys_fresh() -> list[SigningKey] | None:
    """The cached keys while they are fresh, else None. No database work."""
    cached = _keys
    if cached is not None and time.monotonic() - cached[0] < settings.WEBHOOK_SECRET_CACHE_SECONDS:
        return cached[1]
    return None


def signing_keys_load() -> list[SigningKey]:
    """(On a database thread.) The keys, loaded unless another thread has just done it: one load per TTL
    however many requests find them stale at once."""
    global _keys
    with _keys_lock:
        fresh = signing_keys_fresh()
        if fresh is not None:
            return fresh
        keys = own_app_secrets()
        _keys = (time.monotonic(), keys)
        return keys


def signing_keys_forget() -> None:
    global _keys
    _keys = None


def verify_tokens(platform: str) -> list[str]:
    """Per-account verify tokens accepted by the handshake of this endpoint (``meta``: all)."""
    qs = ChannelAccount.objects.filter(active=True).exclude(verify_token="")
    if platform in PLATFORMS:
        qs = qs.filter(kind=platform)
    return list(qs.values_list("verify_token", flat=True))


def _per_state(rows: QuerySet[Any], states: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(states, 0)
    for row in rows.values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def webhook_delivery_counts() -> dict[str, int]:
    """Deliveries per state (operators: a growing ``pending`` means no worker consumes the queue)."""
    return _per_state(WebhookDelivery.objects.all(), WebhookDelivery.State.values)


def outbound_part_counts() -> dict[str, int]:
    """Outbound parts per state, all businesses (operators: ``ambiguous`` counts the sends whose outcome is
    unknown, each also logged as ``outbound_send_ambiguous``; a ``sending`` count that stays up means stuck
    workers)."""
    return _per_state(OutboundPart.objects.all(), OutboundPart.State.values)
