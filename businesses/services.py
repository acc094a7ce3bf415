"""Writes for tenants, members and API keys. Every function takes the business first."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from businesses.models import ApiKey, Business, Membership

API_KEY_PREFIX = "bza_"


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def normalize_origin(origin: str) -> str:
    """``https://Shop.Example:443/`` -> ``https://shop.example``: origins compare as the browser sends them."""
    origin = origin.strip().rstrip("/").lower()
    for scheme, port in (("https://", ":443"), ("http://", ":80")):
        if origin.startswith(scheme) and origin.endswith(port):
            origin = origin.removesuffix(port)
    return origin


def unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "business"
    slug, n = base, 1
    while Business.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def business_create(
    *,
    name: str,
    owner: User | None = None,
    slug: str | None = None,
    timezone_name: str = "UTC",
    allowed_origins: list[str] | None = None,
) -> Business:
    with transaction.atomic():
        business = Business(
            name=name,
            slug=slug or unique_slug(name),
            timezone=timezone_name,
            allowed_origins=[normalize_origin(o) for o in allowed_origins or []],
        )
        business.full_clean()
        business.save()
        if owner is not None:
            Membership.objects.create(business=business, user=owner, role=Membership.Role.OWNER)
    return business


def business_set_allowed_origins(business: Business, *, origins: list[str]) -> Business:
    business.allowed_origins = sorted({normalize_origin(o) for o in origins if o.strip()})
    business.save(update_fields=["allowed_origins"])
    return business


def business_set_demo_page(business: Business, *, enabled: bool) -> Business:
    """Turn the public demo storefront (/demo/<slug>/) on or off; off is the default."""
    business.demo_page_enabled = enabled
    business.save(update_fields=["demo_page_enabled"])
    return business


def membership_add(business: Business, *, user: User, role: str = Membership.Role.STAFF) -> Membership:
    membership, _ = Membership.objects.update_or_create(business=business, user=user, defaults={"role": role})
    return membership


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    raw_key: str  # shown to the person once, never stored


def api_key_issue(business: Business, *, name: str) -> IssuedApiKey:
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        business=business,
        name=name,
        prefix=raw_key[: len(API_KEY_PREFIX) + 8],
        key_hash=hash_api_key(raw_key),
    )
    return IssuedApiKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(business: Business, *, api_key_id: int) -> bool:
    return (
        ApiKey.objects.filter(business=business, pk=api_key_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        == 1
    )
