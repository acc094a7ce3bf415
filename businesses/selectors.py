"""Reads for tenants. The scoping helpers here are how every other app finds "the business" of a request."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from businesses.models import ApiKey, Business, Invitation, Membership
from businesses.services import hash_api_key, normalize_origin

M = TypeVar("M", bound=Model)

LAST_USED_PRECISION = timedelta(minutes=1)


def scoped(business: Business, queryset: QuerySet[M]) -> QuerySet[M]:
    """The rows of ``queryset`` that belong to ``business`` (every tenant model has a ``business`` FK)."""
    return queryset.filter(business=business)


def get_scoped_or_404(business: Business, queryset: QuerySet[M], **lookup: object) -> M:
    """One row of this business, or 404: another tenant's row is indistinguishable from a missing one."""
    try:
        return scoped(business, queryset).get(**lookup)
    # Every model's DoesNotExist subclasses it (a generic M has no DoesNotExist for the type checker).
    except ObjectDoesNotExist as exc:
        raise Http404 from exc


def businesses_for_user(user: User | AnonymousUser) -> QuerySet[Business]:
    if not user.is_authenticated:
        return Business.objects.none()
    return Business.objects.filter(memberships__user=user).order_by("name")


def membership_for(user: User | AnonymousUser, business_slug: str) -> Membership:
    """The user's membership of the business with that slug, or 404 (never reveals that it exists)."""
    if not user.is_authenticated:
        raise Http404
    try:
        return Membership.objects.select_related("business").get(business__slug=business_slug, user=user)
    except Membership.DoesNotExist as exc:
        raise Http404 from exc


def business_for_demo_page(slug: str) -> Business | None:
    """The business whose public demo storefront is at /demo/<slug>/, when its owner turned it on (a business
    that did not is indistinguishable from one that does not exist)."""
    return Business.objects.filter(slug=slug, demo_page_enabled=True).first()


def api_key_for(raw_key: str) -> ApiKey | None:
    """The live (not revoked) key with this secret, its business loaded; its ``last_used_at`` is brought up
    to date (at most once a minute: a busy integration must not write the row on every request)."""
    if not raw_key:
        return None
    api_key = (
        ApiKey.objects.select_related("business")
        .filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_PRECISION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


def business_for_widget_key(widget_key: str) -> Business | None:
    return Business.objects.filter(widget_key=widget_key).first()


def origin_allowed(business: Business, origin: str | None) -> bool:
    """Whether a page served from ``origin`` may open this business's widget. No origin, no entry."""
    if not origin:
        return False
    return normalize_origin(origin) in {normalize_origin(o) for o in business.allowed_origins}


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation a link's token names, whatever its state, or None for a malformed or tampered token."""
    pk, _, _digest = token.partition(".")
    if not pk.isdigit() or len(pk) > 18:
        return None
    invitation = Invitation.objects.select_related("business").filter(pk=int(pk)).first()
    if invitation is None or not constant_time_compare(invitation.token(), token):
        return None
    return invitation


def invitations_pending(business: Business) -> QuerySet[Invitation]:
    return (
        Invitation.objects.filter(
            business=business,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("invited_by")
        .order_by("-created_at")
    )


def members(business: Business) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(business=business).select_related("user").order_by("role", "user__username")
    )
