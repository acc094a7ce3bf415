"""Writes for tenants, members and API keys. Every function takes the business first."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from businesses.models import ApiKey, ApiScope, Business, Invitation, Membership, all_api_scopes
from common.tasks import enqueue_on_commit

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


def api_key_issue(business: Business, *, name: str, scopes: Sequence[str] | None = None) -> IssuedApiKey:
    """A new key with these scopes (all of them by default)."""
    unknown = set(scopes or ()) - set(ApiScope.values)
    if unknown:
        raise ValueError(f"unknown API scopes: {sorted(unknown)}")
    chosen = all_api_scopes() if scopes is None else [s for s in ApiScope.values if s in scopes]
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        business=business,
        name=name,
        prefix=raw_key[: len(API_KEY_PREFIX) + 8],
        key_hash=hash_api_key(raw_key),
        scopes=chosen,
    )
    return IssuedApiKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(business: Business, *, api_key_id: int) -> bool:
    return (
        ApiKey.objects.filter(business=business, pk=api_key_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        == 1
    )


# --- Invitations (docs/admin.md, "Team") ----------------------------------------------------------------------


class InvitationRefused(Exception):
    """Why an invitation link does not work; ``str()`` is the message to show. Nothing was changed."""


class InvitationForAnotherPerson(InvitationRefused):
    """The invitation is pending but addressed to another email than the signed-in person's."""


def invitation_create(*, business: Business, email: str, role: str, invited_by: User) -> Invitation:
    """Invite ``email`` to ``business`` with ``role``; its mail is queued after commit.

    A pending invitation of the same address to this business is revoked: the newest link is the one that
    works. Raises ``ValidationError`` for a role that does not exist or an address that is already a member.
    """
    email = email.strip().lower()
    if role not in Membership.Role.values:
        raise ValidationError({"role": ["Choose a role."]})
    if Membership.objects.filter(business=business, user__username__iexact=email).exists():
        raise ValidationError({"email": ["This person is already a member of the business."]})
    now = timezone.now()
    with transaction.atomic(durable=True):
        Invitation.objects.filter(
            business=business, email=email, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now)
        invitation = Invitation.objects.create(
            business=business,
            email=email,
            role=role,
            invited_by=invited_by,
            expires_at=now + timedelta(seconds=settings.INVITATION_MAX_AGE),
        )
        enqueue_on_commit("dashboard.tasks.send_invitation_mail", invitation.pk)
    return invitation


def invitation_revoke(business: Business, *, invitation_id: int) -> bool:
    """Withdraw a pending invitation of this business (True), or do nothing (already used or withdrawn)."""
    return (
        Invitation.objects.filter(
            business=business, pk=invitation_id, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        == 1
    )


def _invitation_refusal(invitation: Invitation) -> str | None:
    if invitation.revoked_at is not None:
        return "This invitation was withdrawn. Ask the business owner for a new one."
    if invitation.accepted_at is not None:
        return "This invitation has already been used. Sign in to open the business."
    if invitation.expires_at <= timezone.now():
        return "This invitation has expired. Ask the business owner for a new one."
    return None


def invitation_check(invitation: Invitation | None, *, user: User | None = None) -> None:
    """Raise ``InvitationRefused`` unless ``invitation`` (from ``selectors.invitation_for_token``) is pending
    and, when ``user`` is given, addressed to that person's email."""
    if invitation is None:
        raise InvitationRefused("This invitation link is not valid. Check that you copied all of it.")
    refusal = _invitation_refusal(invitation)
    if refusal:
        raise InvitationRefused(refusal)
    if user is not None and user.username.lower() != invitation.email:
        raise InvitationForAnotherPerson(
            "This invitation is for another email address. Sign out, then open the link again "
            "and sign in (or create the account) with the invited address."
        )


def invitation_accept(
    *, invitation_id: int, user: User | None = None, password: str | None = None
) -> Membership:
    """Accept a pending invitation: ``user`` (signed in, with the invited email) joins the business, or, with
    ``password`` and no ``user``, an account for the invited email is created and joins it.

    The business and the role are the invitation's, whatever the request said. Raises ``InvitationRefused``
    (nothing changed) for an invitation that is no longer pending or is another person's, and
    ``ValidationError`` for a weak password or an address that already has an account (sign in instead).
    """
    with transaction.atomic(durable=True):
        # Locked: two clicks on one link (or two browsers) accept it once.
        invitation = (
            Invitation.objects.select_for_update().select_related("business").filter(pk=invitation_id).first()
        )
        invitation_check(invitation, user=user)
        assert invitation is not None  # invitation_check
        if user is None:
            user_model = get_user_model()
            if user_model.objects.filter(username__iexact=invitation.email).exists():
                raise InvitationRefused(
                    "An account with this email already exists: sign in, then open the link again."
                )
            candidate = user_model(username=invitation.email, email=invitation.email)
            validate_password(password or "", candidate)
            user = user_model.objects.create_user(
                username=invitation.email, email=invitation.email, password=password
            )
        # An existing membership keeps its role: an invitation never changes what a member may do.
        membership, _ = Membership.objects.get_or_create(
            business=invitation.business, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership
