"""Accounts by email: password reset, sign-up confirmed by a signed link, invitations with a role, and the
email backend from the environment.

Mail goes through the real path: the view queues a task after commit (common.tasks.enqueue_on_commit), the
task runs here in-process (``outbox`` fixture) and sends through Django's locmem backend. Every hostile link
(tampered, expired, revoked, used, another person's) is refused with its message and creates nothing, and no
answer tells a visitor whether an address has an account.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core import mail, signing
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

import common.tasks
from businesses.models import Business, Invitation, Membership
from config.email import CONSOLE_BACKEND, SMTP_BACKEND, email_settings
from config.settings import BASE_DIR
from dashboard.signup_tokens import signup_token
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-unusual-passphrase-42"
NEW_PASSWORD = "another-long-passphrase-77"
LINK = re.compile(r"https?://\S+")


class _InlineCelery:
    """Stands in for Celery's app in common.tasks: a queued task runs at once, in this process."""

    def send_task(
        self,
        name: str,
        args: Any = (),
        kwargs: Any = None,
        countdown: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        module, _, function = name.rpartition(".")
        task = getattr(importlib.import_module(module), function)
        task.apply(args=args, kwargs=kwargs or {}, headers=headers, throw=True)


@pytest.fixture(autouse=True)
def outbox(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[mail.EmailMessage]]:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PUBLIC_URL = "https://agent.example"
    settings.DEFAULT_FROM_EMAIL = "Shop agent <noreply@agent.example>"
    monkeypatch.setattr(common.tasks, "current_app", _InlineCelery())
    mail.outbox = []
    yield mail.outbox


def _page(response: Any) -> str:
    """The page without what differs per request anyway (the CSRF token)."""
    return re.sub(r'(csrfmiddlewaretoken" value=")[^"]+', r"\1", response.content.decode())


def _link(message: mail.EmailMessage) -> str:
    (url,) = [u for u in LINK.findall(str(message.body)) if "/accounts/" in u and "/login/" not in u][:1]
    assert url.startswith("https://agent.example/")
    return url.removeprefix("https://agent.example")


def _counts() -> tuple[int, int, int, int]:
    return (
        User.objects.count(),
        Business.objects.count(),
        Membership.objects.count(),
        Invitation.objects.filter(accepted_at__isnull=False).count(),
    )


# --- The email backend from the environment -----------------------------------------------------------------


def test_email_url_smtp_with_starttls() -> None:
    got = email_settings("smtp://mailer%40shop:p%40ss%3Aword@smtp.example:2525?tls=1&timeout=5")
    assert (got.backend, got.host, got.port, got.user, got.password) == (
        SMTP_BACKEND,
        "smtp.example",
        2525,
        "mailer@shop",
        "p@ss:word",
    )
    assert (got.use_tls, got.use_ssl, got.timeout, got.configured) == (True, False, 5.0, True)


def test_email_url_smtps_and_smtp_tls_and_console() -> None:
    smtps = email_settings("smtps://u:p@smtp.example")
    assert (smtps.port, smtps.use_ssl, smtps.use_tls) == (465, True, False)
    starttls = email_settings("smtp+tls://u:p@smtp.example")
    assert (starttls.port, starttls.use_ssl, starttls.use_tls) == (587, False, True)
    assert email_settings("console://").backend == CONSOLE_BACKEND
    assert email_settings("").configured is False


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("smtp//u:hunter2@smtp.example", "no scheme"),
        ("imap://u:hunter2@smtp.example", "unknown scheme 'imap'"),
        ("smtp://u:hunter2@:587", "no host"),
        ("smtp://u:hunter2@smtp.example:99999", "Port out of range"),
        ("smtps://u:hunter2@smtp.example?tls=1", "tls and ssl exclude each other"),
        ("smtp://u:hunter2@smtp.example?tsl=1", "unknown option 'tsl'"),
        ("smtp://u:hunter2@smtp.example?tls=maybe", "tls= must be 1 or 0"),
    ],
)
def test_a_bad_email_url_is_refused_naming_the_variable_not_the_password(raw: str, reason: str) -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        email_settings(raw)
    assert str(refused.value).startswith("EMAIL_URL is not valid: expected smtp://")
    assert reason in str(refused.value)
    assert "hunter2" not in str(refused.value)


def _start(**env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` in a fresh process on config.settings with DEBUG off and exactly these mail vars."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "DEFAULT_FROM", "DEBUG"))}
    production = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "Zq8vT1m-production-secret-key-for-the-mail-check-0123456789",
        "FIELD_ENCRYPTION_KEY": "bm90LWEtcmVhbC1rZXktYnV0LTMyLWJ5dGVzLWxvbmc=",
        "ALLOWED_HOSTS": "agent.example",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**base, **production, **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_up_stops_on_a_bad_email_url_and_warns_without_one() -> None:
    bad = _start(EMAIL_URL="smtp://mailer:hunter2@smtp.example:notaport")
    assert bad.returncode != 0
    assert "ImproperlyConfigured: EMAIL_URL is not valid" in bad.stderr
    assert "hunter2" not in bad.stderr
    unset = _start()
    assert unset.returncode == 0, unset.stderr
    assert "EMAIL_URL is not set: account mails (password resets, sign-up confirmations, invitations)" in (
        unset.stderr
    )
    no_sender = _start(EMAIL_URL="smtp://mailer:secret@smtp.example:587?tls=1")
    assert no_sender.returncode != 0
    assert "DEFAULT_FROM_EMAIL must be set when EMAIL_URL is an SMTP server" in no_sender.stderr
    configured = _start(
        EMAIL_URL="smtp://mailer:secret@smtp.example:587?tls=1", DEFAULT_FROM_EMAIL="a@b.example"
    )
    assert configured.returncode == 0, configured.stderr
    assert "EMAIL_URL is not set" not in configured.stderr


# --- Password reset -----------------------------------------------------------------------------------------


def test_the_login_page_links_to_the_password_reset() -> None:
    assert 'href="/accounts/password-reset/">Forgot your password?</a>' in _page(
        Client().get("/accounts/login/")
    )


def test_password_reset_by_mail_then_the_link_works_once(outbox: list[mail.EmailMessage]) -> None:
    user = UserFactory(username="owner@shop.example")
    response = Client().post("/accounts/password-reset/", {"email": "Owner@Shop.Example"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password-reset/sent/"
    assert [m.to for m in outbox] == [["owner@shop.example"]]
    assert outbox[0].subject == "Reset your bizagent password"
    assert outbox[0].from_email == "Shop agent <noreply@agent.example>"
    link = _link(outbox[0])

    client = Client()
    set_password = client.get(link)  # Django moves the token into the session, off the address bar
    assert set_password.status_code == 302
    form = client.get(set_password["Location"])
    assert "Choose a new password" in form.content.decode()
    done = client.post(
        set_password["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done["Location"] == "/accounts/password-reset/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    signed_in = Client().post(
        "/accounts/login/", {"username": "owner@shop.example", "password": NEW_PASSWORD}
    )
    assert signed_in.status_code == 302

    used = Client().get(link)  # the password changed: the token no longer checks
    assert "This password reset link is not valid" in used.content.decode()


def test_the_reset_request_says_the_same_whether_or_not_the_email_is_registered(
    outbox: list[mail.EmailMessage],
) -> None:
    UserFactory(username="owner@shop.example")
    answers = []
    for email in ("owner@shop.example", "nobody@shop.example"):
        client = Client()
        response = client.post("/accounts/password-reset/", {"email": email})
        answers.append((response.status_code, response["Location"], _page(client.get(response["Location"]))))
    assert answers[0] == answers[1]
    assert "If an account uses the address you entered" in answers[0][2]
    assert [m.to for m in outbox] == [["owner@shop.example"]]  # the unknown address got nothing


@pytest.mark.parametrize("kind", ["tampered", "expired", "other user"])
def test_a_bad_reset_link_changes_no_password(
    kind: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    user = UserFactory(username="owner@shop.example")
    other = UserFactory(username="other@shop.example")
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    if kind == "tampered":
        token = token[:-1] + ("0" if token[-1] != "0" else "1")
    elif kind == "expired":
        later = default_token_generator._now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)
        monkeypatch.setattr(default_token_generator, "_now", lambda: later)
    else:
        token = default_token_generator.make_token(other)
    client = Client()
    response = client.get(f"/accounts/password-reset/{uid}/{token}/", follow=True)
    assert "This password reset link is not valid" in response.content.decode()
    response = client.post(
        f"/accounts/password-reset/{uid}/set-password/",
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    user.refresh_from_db()
    assert user.check_password("correct-horse-battery")


def test_a_password_reset_ends_the_sign_in_throttle_of_the_account(
    settings: Any, outbox: list[mail.EmailMessage]
) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 2
    UserFactory(username="owner@shop.example")
    for _ in range(2):
        Client().post("/accounts/login/", {"username": "owner@shop.example", "password": "wrong"})
    held = Client().post(
        "/accounts/login/", {"username": "owner@shop.example", "password": "correct-horse-battery"}
    )
    assert "Too many sign-in attempts" in held.content.decode()
    Client().post("/accounts/password-reset/", {"email": "owner@shop.example"})
    client = Client()
    form_url = client.get(_link(outbox[0]))["Location"]
    client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    signed_in = Client().post(
        "/accounts/login/", {"username": "owner@shop.example", "password": NEW_PASSWORD}
    )
    assert signed_in.status_code == 302


def test_reset_links_use_public_url_not_the_request_host(outbox: list[mail.EmailMessage]) -> None:
    UserFactory(username="owner@shop.example")
    Client().post("/accounts/password-reset/", {"email": "owner@shop.example"}, HTTP_HOST="localhost")
    assert "https://agent.example/accounts/password-reset/" in str(outbox[0].body)
    assert "localhost" not in str(outbox[0].body)


# --- Sign-up confirmed by email -------------------------------------------------------------------------------

SIGNUP = {"email": "ana@shop.example", "business_name": "Ana's Bikes", "timezone": "Europe/Lisbon"}


def test_sign_up_by_email_link_then_password(outbox: list[mail.EmailMessage]) -> None:
    response = Client().post("/accounts/signup/", SIGNUP)
    assert response["Location"] == "/accounts/signup/sent/"
    assert _counts() == (0, 0, 0, 0)
    (message,) = outbox
    assert message.to == ["ana@shop.example"]
    assert message.subject == "Confirm your email to create Ana's Bikes on bizagent"
    link = _link(message)
    client = Client()
    page = client.get(link)
    assert page.status_code == 200
    assert "ana@shop.example" in page.content.decode()
    response = client.post(link, {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert response["Location"] == "/app/anas-bikes/"
    user = User.objects.get(username="ana@shop.example")
    assert user.check_password(PASSWORD)
    membership = Membership.objects.get(user=user)
    assert (membership.business.name, membership.business.timezone, membership.role) == (
        "Ana's Bikes",
        "Europe/Lisbon",
        "owner",
    )
    # The link did its work: used again, it creates nothing.
    again = Client().post(link, {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert again.status_code == 400
    assert "This link has already been used" in again.content.decode()
    assert _counts() == (1, 1, 1, 0)


def test_sign_up_answers_the_same_for_a_registered_email_and_mails_its_owner(
    outbox: list[mail.EmailMessage],
) -> None:
    UserFactory(username="owner@shop.example")
    answers = []
    for email in ("Owner@Shop.example", "new@shop.example"):
        client = Client()
        response = client.post("/accounts/signup/", {**SIGNUP, "email": email})
        answers.append((response.status_code, response["Location"], _page(client.get(response["Location"]))))
    assert answers[0] == answers[1]
    assert "Check your email to continue" in answers[0][2]
    existing, new = outbox
    assert existing.to == ["owner@shop.example"]
    assert existing.subject == "Someone tried to sign up to bizagent with your email"
    assert "https://agent.example/accounts/login/" in str(existing.body)
    assert "https://agent.example/accounts/password-reset/" in str(existing.body)
    assert "/accounts/signup/confirm/" not in str(existing.body)
    assert new.to == ["new@shop.example"] and "/accounts/signup/confirm/" in str(new.body)
    assert (User.objects.count(), Business.objects.count()) == (1, 0)


def test_a_tampered_or_expired_sign_up_link_creates_nothing(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    token = signup_token(email="ana@shop.example", business_name="Ana's Bikes", timezone_name="UTC")
    payload, _, signature = token.rpartition(":")
    forged = signing.dumps({"e": "ana@shop.example", "b": "Ana's Bikes", "t": "UTC"}, salt="another.salt")
    for bad in (payload + ":" + signature[::-1], forged, "garbage"):
        response = Client().post(
            f"/accounts/signup/confirm/{bad}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
        )
        assert response.status_code == 400
        assert "This link is not valid. Check that you copied all of it." in response.content.decode()
    real_time = signing.time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() + settings.SIGNUP_LINK_MAX_AGE + 5)
    response = Client().post(
        f"/accounts/signup/confirm/{token}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 400
    assert "This link has expired. Sign up again to get a new one." in response.content.decode()
    assert _counts() == (0, 0, 0, 0)


def test_sign_up_and_reset_mails_to_one_address_are_capped(
    settings: Any, outbox: list[mail.EmailMessage]
) -> None:
    settings.ACCOUNT_MAILS_PER_ADDRESS_PER_HOUR = 2
    answers = set()
    for _ in range(3):
        response = Client().post("/accounts/signup/", SIGNUP)
        answers.add((response.status_code, response["Location"]))
    Client().post("/accounts/password-reset/", {"email": "ANA@shop.example"})
    assert answers == {(302, "/accounts/signup/sent/")}
    assert len(outbox) == 2


def test_the_demo_login_still_signs_in() -> None:
    from django.core.management import call_command

    from businesses.demo import DEMO_EMAIL, DEMO_PASSWORD

    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    response = Client().post("/accounts/login/", {"username": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 302


# --- Invitations ------------------------------------------------------------------------------------------------


def _owner_client(business: Business | None = None) -> tuple[Client, Membership]:
    membership = MembershipFactory(role=Membership.Role.OWNER, **({"business": business} if business else {}))
    client = Client()
    client.force_login(membership.user)
    return client, membership


def _invite(client: Client, slug: str, email: str, role: str = "staff") -> Any:
    return client.post(f"/app/{slug}/team/", {"email": email, "role": role})


def test_an_owner_invites_a_new_person_who_sets_a_password_and_joins_as_staff(
    outbox: list[mail.EmailMessage],
) -> None:
    owner, membership = _owner_client()
    business = membership.business
    response = _invite(owner, business.slug, "Bo@Shop.example")
    assert response["Location"] == f"/app/{business.slug}/team/"
    invitation = Invitation.objects.get()
    assert (invitation.business, invitation.email, invitation.role, invitation.invited_by) == (
        business,
        "bo@shop.example",
        "staff",
        membership.user,
    )
    team = owner.get(f"/app/{business.slug}/team/").content.decode()
    assert "bo@shop.example" in team and "Revoke" in team
    (message,) = outbox
    assert message.to == ["bo@shop.example"]
    assert message.subject == f"You are invited to {business.name} on bizagent"
    link = _link(message)
    assert invitation.nonce not in link  # the link is an HMAC of the row, not the stored value

    invitee = Client()
    page = invitee.get(link).content.decode()
    assert f"Join {business.name}" in page and "Choose a password" in page
    response = invitee.post(link, {"new_password1": PASSWORD, "new_password2": PASSWORD, "role": "owner"})
    assert response["Location"] == f"/app/{business.slug}/"
    bo = User.objects.get(username="bo@shop.example")
    assert list(Membership.objects.filter(user=bo).values_list("business", "role")) == [
        (business.pk, "staff")
    ]
    assert invitee.get(f"/app/{business.slug}/").status_code == 200
    invitation.refresh_from_db()
    assert invitation.accepted_by == bo and invitation.accepted_at is not None
    assert (
        "bo@shop.example" not in owner.get(f"/app/{business.slug}/team/").content.decode().split("Members")[0]
    )

    # Used: refused, nothing more created, whoever opens it.
    for client in (Client(), invitee):
        response = client.post(link, {"new_password1": PASSWORD, "new_password2": PASSWORD})
        assert response.status_code == 400
        assert "This invitation has already been used" in response.content.decode()
    assert Membership.objects.filter(user=bo).count() == 1


def test_a_signed_in_person_with_the_invited_email_joins_with_the_invited_role() -> None:
    owner, membership = _owner_client()
    _invite(owner, membership.business.slug, "carla@shop.example", role="owner")
    carla = UserFactory(username="carla@shop.example")
    elsewhere = BusinessFactory()
    link = _link(mail.outbox[0])

    anonymous = Client().get(link).content.decode()
    assert "already has an account" in anonymous and f"/accounts/login/?next={link}" in anonymous
    # Without signing in, no password can claim the existing account.
    Client().post(link, {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert not Membership.objects.filter(user=carla).exists()

    client = Client()
    client.force_login(carla)
    response = client.post(link, {"business": elsewhere.slug})
    assert response["Location"] == f"/app/{membership.business.slug}/"
    assert list(Membership.objects.filter(user=carla).values_list("business", "role")) == [
        (membership.business.pk, "owner")
    ]


def test_an_invitation_opened_by_another_signed_in_person_is_refused() -> None:
    owner, membership = _owner_client()
    _invite(owner, membership.business.slug, "dana@shop.example")
    intruder = UserFactory(username="eve@shop.example")
    client = Client()
    client.force_login(intruder)
    link = _link(mail.outbox[0])
    for response in (client.get(link), client.post(link)):
        assert response.status_code == 403
        assert "This invitation is for another email address" in response.content.decode()
    assert not Membership.objects.filter(user=intruder).exists()
    assert Invitation.objects.get().accepted_at is None


def test_tampered_expired_and_revoked_invitations_are_refused_and_create_nothing(settings: Any) -> None:
    owner, membership = _owner_client()
    slug = membership.business.slug
    _invite(owner, slug, "fred@shop.example")
    invitation = Invitation.objects.get()
    token = invitation.token()
    pk, digest = token.split(".")
    before = _counts()
    tampered = [
        f"{pk}.{digest[:-1]}{'0' if digest[-1] != '0' else '1'}",  # one character changed
        f"{int(pk) + 1}.{digest}",  # the HMAC of another row
        f"{pk}.",
        "garbage",
        f"99999999999999999999.{digest}",
    ]
    for bad in tampered:
        response = Client().post(
            f"/accounts/invitations/{bad}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
        )
        assert response.status_code == 400, bad
        assert "This invitation link is not valid" in response.content.decode()

    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().post(
        f"/accounts/invitations/{token}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 400
    assert "This invitation has expired" in response.content.decode()

    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() + timedelta(days=1))
    assert owner.post(f"/app/{slug}/team/invitations/{invitation.pk}/revoke/").status_code == 302
    assert "No pending invitations." in owner.get(f"/app/{slug}/team/").content.decode()
    response = Client().post(
        f"/accounts/invitations/{token}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 400
    assert "This invitation was withdrawn" in response.content.decode()
    assert _counts() == before
    assert not User.objects.filter(username="fred@shop.example").exists()


def test_a_new_invitation_to_the_same_address_replaces_the_pending_one() -> None:
    owner, membership = _owner_client()
    _invite(owner, membership.business.slug, "gil@shop.example")
    _invite(owner, membership.business.slug, "gil@shop.example", role="owner")
    first, second = Invitation.objects.order_by("pk")
    assert first.revoked_at is not None and second.revoked_at is None
    response = Client().get(_link(mail.outbox[0]))
    assert "This invitation was withdrawn" in response.content.decode()


def test_staff_cannot_invite_or_revoke_and_an_owner_cannot_invite_a_member_twice() -> None:
    owner, membership = _owner_client()
    business = membership.business
    staff = MembershipFactory(business=business, role=Membership.Role.STAFF).user
    _invite(owner, business.slug, "hana@shop.example")
    invitation = Invitation.objects.get()
    client = Client()
    client.force_login(staff)
    assert _invite(client, business.slug, "ivan@shop.example", role="owner").status_code == 403
    assert client.post(f"/app/{business.slug}/team/invitations/{invitation.pk}/revoke/").status_code == 403
    assert Invitation.objects.count() == 1
    assert Invitation.objects.get().revoked_at is None

    response = _invite(owner, business.slug, staff.username.upper())
    assert response.status_code == 400
    assert "This person is already a member of the business." in response.content.decode()
    assert Invitation.objects.count() == 1


def test_an_invitation_never_reaches_another_business() -> None:
    owner_a, membership_a = _owner_client()
    owner_b, membership_b = _owner_client()
    _invite(owner_b, membership_b.business.slug, "jo@shop.example")
    invitation_b = Invitation.objects.get()
    # A's owner cannot see or revoke B's invitation under A's slug.
    response = owner_a.post(f"/app/{membership_a.business.slug}/team/invitations/{invitation_b.pk}/revoke/")
    assert response.status_code == 404
    assert "jo@shop.example" not in owner_a.get(f"/app/{membership_a.business.slug}/team/").content.decode()
    invitation_b.refresh_from_db()
    assert invitation_b.revoked_at is None
    # Accepting B's invitation, whatever the request names, joins B only.
    jo = Client()
    jo.post(
        _link(mail.outbox[0]),
        {"new_password1": PASSWORD, "new_password2": PASSWORD, "business": membership_a.business.slug},
    )
    user = User.objects.get(username="jo@shop.example")
    assert list(Membership.objects.filter(user=user).values_list("business", flat=True)) == [
        membership_b.business.pk
    ]
    assert jo.get(f"/app/{membership_a.business.slug}/").status_code == 404
