"""Account mails: sign-up confirmation, "you already have an account", password reset, invitation.

The only code that sends mail. It runs in a Celery worker (``dashboard.tasks``, ``outbound`` queue), never in
the request: whether an address has an account is decided here, so the page a visitor sees, and the time it
takes, are the same for a registered address and a new one (the request only queues the task). Links are
built from ``PUBLIC_URL``, never from the request's Host header.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from businesses.models import Invitation
from common.redis import sync_client
from dashboard.signup_tokens import signup_token


def mail_allowed(email: str) -> bool:
    """Count one account mail to ``email``; False once it had ``ACCOUNT_MAILS_PER_ADDRESS_PER_HOUR``.

    Sign-up and reset forms let anyone ask us to mail any address: this caps how often one inbox is mailed
    (and our sender's reputation spent) whatever the asker. Counted whether or not the address has an account.
    """
    key = "mail:account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    pipe = sync_client().pipeline()
    pipe.set(key, 0, ex=3600, nx=True)
    pipe.incr(key)
    count = pipe.execute()[1]
    return int(count) <= settings.ACCOUNT_MAILS_PER_ADDRESS_PER_HOUR


def absolute(path: str) -> str:
    return settings.PUBLIC_URL + path


def _send(template: str, to: str, context: dict[str, object]) -> None:
    context = {**context, "public_url": settings.PUBLIC_URL}
    subject = " ".join(render_to_string(f"dashboard/mail/{template}_subject.txt", context).split())
    body = render_to_string(f"dashboard/mail/{template}.txt", context)
    send_mail(subject, body, None, [to])


def send_signup_mail(*, email: str, business_name: str, timezone_name: str) -> None:
    """A confirmation link for a new address; for one that has an account, a note saying so instead."""
    if get_user_model().objects.filter(username__iexact=email).exists():
        _send(
            "signup_existing",
            email,
            {
                "login_url": absolute(reverse("dashboard:login")),
                "reset_url": absolute(reverse("dashboard:password_reset")),
            },
        )
        return
    token = signup_token(email=email, business_name=business_name, timezone_name=timezone_name)
    _send(
        "signup_confirm",
        email,
        {
            "business_name": business_name,
            "confirm_url": absolute(reverse("dashboard:signup_confirm", kwargs={"token": token})),
            "hours": settings.SIGNUP_LINK_MAX_AGE // 3600,
        },
    )


def send_password_reset_mail(*, email: str) -> None:
    """Django's reset link (``default_token_generator``) to each active account with this email; none: no mail."""
    users = get_user_model().objects.filter(email__iexact=email, is_active=True)
    for user in users:
        if not user.has_usable_password():
            continue
        path = reverse(
            "dashboard:password_reset_confirm",
            kwargs={
                "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
                "token": default_token_generator.make_token(user),
            },
        )
        _send(
            "password_reset",
            user.email,
            {"reset_url": absolute(path), "minutes": settings.PASSWORD_RESET_TIMEOUT // 60},
        )


def send_invitation_mail(*, invitation_id: int) -> None:
    """The invitation's link; nothing when it was revoked, used or has expired meanwhile."""
    invitation = Invitation.objects.select_related("business", "invited_by").filter(pk=invitation_id).first()
    if invitation is None or not invitation.is_pending:
        return
    _send(
        "invitation",
        invitation.email,
        {
            "invitation": invitation,
            "accept_url": absolute(
                reverse("dashboard:invitation_accept", kwargs={"token": invitation.token()})
            ),
            "days": settings.INVITATION_MAX_AGE // 86400,
        },
    )
