"""The tenant (Business), who may act for it (Membership, Invitation) and machine credentials (ApiKey)."""

from __future__ import annotations

import secrets
import zoneinfo

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac

INVITATION_TOKEN_SALT = "businesses.Invitation.token"


def new_widget_key() -> str:
    return "pk_" + secrets.token_urlsafe(18)


def new_invitation_nonce() -> str:
    return secrets.token_urlsafe(32)


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone")


class Business(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    # Public: it sits in the widget's <script> tag. It identifies the business, it authorises nothing.
    widget_key = models.CharField(max_length=40, unique=True, default=new_widget_key)
    # Exact origins ("https://shop.example") whose pages may open the widget's websocket.
    allowed_origins = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    # /demo/<slug>/ shows the catalog and the agent to anyone: served only when the owner turns it on.
    demo_page_enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "businesses"

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        STAFF = "staff", "Staff"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.STAFF)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["business", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.business} ({self.role})"


class ApiScope(models.TextChoices):
    """What an API key may do (docs/api.md, "Scopes")."""

    READ = "read", "Read the catalog, documents, settings, analytics"
    WRITE = "write", "Change the catalog, documents, settings, curated answers"
    CONVERSATIONS = "conversations", "Read and answer conversations, contacts"


def all_api_scopes() -> list[str]:
    return list(ApiScope.values)


class ApiKey(models.Model):
    """A key for the REST API. Only a SHA-256 of the secret is stored; the secret is shown once."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The first characters of the key, kept in clear so that a person can tell keys apart.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Keys made before scopes existed got all of them (migration 0005), so that nothing they did breaks.
    scopes = ArrayField(
        models.CharField(max_length=20, choices=ApiScope.choices), default=all_api_scopes, blank=True
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Invitation(models.Model):
    """An owner's invitation of an email address to the business, with a role; accepted once, by that address.

    The link's token is ``<pk>.<HMAC of pk and nonce under SECRET_KEY>``: the row alone (a database dump)
    cannot make a link, a changed digit breaks the HMAC, and revoking, expiry and acceptance are the row's.
    """

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=150)  # lower case
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.STAFF)
    nonce = models.CharField(max_length=64, default=new_invitation_nonce, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["business", "email"], name="invitation_business_email")]

    def __str__(self) -> str:
        return f"{self.email} -> {self.business} ({self.role})"

    def token(self) -> str:
        digest = salted_hmac(INVITATION_TOKEN_SALT, f"{self.pk}:{self.nonce}", algorithm="sha256").hexdigest()
        return f"{self.pk}.{digest}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()
