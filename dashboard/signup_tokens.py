"""The token of a sign-up confirmation link: what the sign-up service confirms and the mail carries."""

from __future__ import annotations

from django.core import signing

SIGNUP_SALT = "dashboard.signup"


def signup_token(*, email: str, business_name: str, timezone_name: str) -> str:
    """The token of a sign-up confirmation link: signed with SECRET_KEY and timestamped (it stores nothing)."""
    return signing.dumps(
        {"e": email.strip().lower(), "b": business_name.strip(), "t": timezone_name},
        salt=SIGNUP_SALT,
        compress=True,
    )
