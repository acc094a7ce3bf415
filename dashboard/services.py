"""Writes that span apps for the admin: signing up creates a person and their business at once."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from businesses.models import Business
from businesses.services import business_create


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
