"""Writes that span apps for the admin: signing up (asked by email, confirmed by a signed link, then the person
and their business at once), asking for a password reset link, and saving the agent's settings as a draft (the
admin's form and the REST API) with the regression suite run on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction

from agents.models import Agent
from agents.services import agent_draft_save
from businesses.models import Business
from businesses.services import business_create
from common.tasks import enqueue_on_commit
from dashboard.mail import mail_allowed
from dashboard.signup_tokens import SIGNUP_SALT
from regressions.services import draft_run_start


@dataclass(frozen=True)
class SignUp:
    user: User
    business: Business


def account_signup(*, email: str, password: str, business_name: str, timezone_name: str = "UTC") -> SignUp:
    """A new user (username = email) who owns a new business. All or nothing.

    Raises ``ValidationError`` for a taken email, a weak password or a bad business name/time zone.
    """
    email = email.strip().lower()
    business_name = business_name.strip()
    errors: dict[str, list[str]] = {}
    user_model = get_user_model()
    if not email or "@" not in email:
        errors["email"] = ["Enter a valid email address."]
    elif user_model.objects.filter(username__iexact=email).exists():
        errors["email"] = ["An account with this email already exists. Sign in instead."]
    if not business_name:
        errors["business_name"] = ["Name your business."]
    try:
        validate_password(password, user_model(username=email, email=email))
    except ValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic(durable=True):
        user = user_model.objects.create_user(username=email, email=email, password=password)
        try:
            business = business_create(name=business_name, owner=user, timezone_name=timezone_name)
        except ValidationError as exc:
            raise ValidationError({"business_name": exc.messages}) from exc
    return SignUp(user=user, business=business)


@dataclass(frozen=True)
class SignUpClaim:
    """What a sign-up confirmation link carries (signed, not secret: the person typed it)."""

    email: str
    business_name: str
    timezone_name: str


class SignUpLinkRefused(Exception):
    """Why a sign-up confirmation link does not work; ``str()`` is the message to show."""


def signup_claim(token: str) -> SignUpClaim:
    """The sign-up a link confirms; ``SignUpLinkRefused`` when it is tampered with, expired or already used."""
    try:
        data = signing.loads(token, salt=SIGNUP_SALT, max_age=settings.SIGNUP_LINK_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise SignUpLinkRefused("This link has expired. Sign up again to get a new one.") from exc
    except signing.BadSignature as exc:
        raise SignUpLinkRefused("This link is not valid. Check that you copied all of it.") from exc
    claim = SignUpClaim(email=data["e"], business_name=data["b"], timezone_name=data["t"])
    # One account per address: once it exists the link has done its work (it cannot be used again).
    if get_user_model().objects.filter(username__iexact=claim.email).exists():
        raise SignUpLinkRefused("This link has already been used: the account exists. Sign in instead.")
    return claim


def signup_request(*, email: str, business_name: str, timezone_name: str) -> None:
    """Queue the sign-up mail for ``email``. Creates nothing, and does the same whether or not the address
    has an account (the worker decides which mail to send: ``dashboard.mail.send_signup_mail``)."""
    if mail_allowed(email):
        enqueue_on_commit(
            "dashboard.tasks.send_signup_mail",
            email=email.strip().lower(),
            business_name=business_name.strip(),
            timezone_name=timezone_name,
        )


def password_reset_request(*, email: str) -> None:
    """Queue a password reset mail for ``email``; the worker finds the account, if there is one."""
    if mail_allowed(email):
        enqueue_on_commit("dashboard.tasks.send_password_reset_mail", email=email.strip().lower())


@dataclass(frozen=True)
class DraftSaved:
    agent: Agent  # with its draft (empty: the values were the published ones)
    checking: bool  # the regression suite runs on the draft


def agent_settings_draft(business: Business, **fields: Any) -> DraftSaved:
    """Save validated agent settings (``AgentForm.cleaned_data``) as the agent's draft, which customers do
    not get until it is published (``regressions.gate.draft_publish``), and run the regression suite on it.
    Raises ``ValidationError`` (nothing saved) for values the model refuses."""
    agent = agent_draft_save(business, **fields)
    run = draft_run_start(business=business) if agent.draft else None
    return DraftSaved(agent=agent, checking=run is not None)
