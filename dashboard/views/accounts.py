"""Sign in, sign out, sign up (confirmed by email), password reset, invitations, and a further business for a
signed-in person.

Nothing on these pages tells a visitor whether an address has an account: sign-up and the reset request
queue a mail and answer "check your email" either way (``dashboard.mail`` decides, in the worker, which mail).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_GET, require_http_methods

from businesses.selectors import invitation_for_token
from businesses.services import (
    InvitationForAnotherPerson,
    InvitationRefused,
    business_create,
    invitation_accept,
    invitation_check,
)
from dashboard.forms import BusinessForm, NewPasswordForm, SignInForm, SignUpForm
from dashboard.login_throttle import login_succeeded
from dashboard.services import (
    SignUpLinkRefused,
    account_signup,
    password_reset_request,
    signup_claim,
    signup_request,
)

BACKEND = "django.contrib.auth.backends.ModelBackend"

login_view = auth_views.LoginView.as_view(
    template_name="dashboard/login.html", authentication_form=SignInForm, redirect_authenticated_user=True
)
logout_view = auth_views.LogoutView.as_view()


def _apply_errors(form: Any, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, field_messages in exc.message_dict.items():
        for message in field_messages:
            form.add_error(field if field in form.fields else None, message)


# --- Sign-up: ask by email, confirm by link, then the account and the business --------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        signup_request(
            email=form.cleaned_data["email"],
            business_name=form.cleaned_data["business_name"],
            timezone_name=form.cleaned_data["timezone"],
        )
        return redirect("dashboard:signup_sent")
    return render(request, "dashboard/signup.html", {"form": form})


@require_GET
def signup_sent(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/signup_sent.html")


@require_http_methods(["GET", "POST"])
def signup_confirm(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim = signup_claim(token)
    except SignUpLinkRefused as exc:
        return render(request, "dashboard/link_refused.html", {"refusal": str(exc)}, status=400)
    form = NewPasswordForm(claim.email, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = account_signup(
                email=claim.email,
                password=form.cleaned_data["new_password1"],
                business_name=claim.business_name,
                timezone_name=claim.timezone_name,
            )
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            login(request, result.user, backend=BACKEND)
            return redirect("dashboard:overview", slug=result.business.slug)
    return render(request, "dashboard/signup_confirm.html", {"form": form, "claim": claim})


# --- Password reset (Django's views; the request only queues the mail) ----------------------------------------


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "dashboard/password_reset.html"
    success_url = reverse_lazy("dashboard:password_reset_done")

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        # Not form.save(): that would look the account up and send in this request (an answer that takes
        # longer for a registered address). The worker does both (dashboard.mail.send_password_reset_mail).
        password_reset_request(email=form.cleaned_data["email"])
        return HttpResponseRedirect(self.get_success_url())


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "dashboard/password_reset_confirm.html"
    success_url = reverse_lazy("dashboard:password_reset_complete")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        # Whoever reset the password holds the mailbox: the sign-in throttle's count for it starts again
        # (its message tells a throttled person to reset their password).
        login_succeeded(self.request, form.user.username)
        return response


password_reset = PasswordResetView.as_view()
password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="dashboard/password_reset_sent.html",
    extra_context={"timeout_minutes": settings.PASSWORD_RESET_TIMEOUT // 60},
)
password_reset_confirm = PasswordResetConfirmView.as_view()
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="dashboard/password_reset_complete.html"
)


# --- Invitations ------------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Accept an invitation: the signed-in invitee joins; a new person sets a password and joins; someone who
    has an account signs in first. Refused (nothing created) when not pending or addressed to someone else."""
    found = invitation_for_token(token)
    user = request.user if isinstance(request.user, User) else None
    try:
        invitation_check(found, user=user)
    except InvitationRefused as exc:
        status = 403 if isinstance(exc, InvitationForAnotherPerson) else 400
        return render(request, "dashboard/link_refused.html", {"refusal": str(exc)}, status=status)
    assert found is not None  # invitation_check
    has_account = user is None and get_user_model().objects.filter(username__iexact=found.email).exists()
    form = (
        NewPasswordForm(found.email, data=request.POST or None) if user is None and not has_account else None
    )
    if request.method == "POST" and not has_account and (form is None or form.is_valid()):
        try:
            membership = invitation_accept(
                invitation_id=found.pk,
                user=user,
                password=form.cleaned_data["new_password1"] if form is not None else None,
            )
        except InvitationRefused as exc:
            return render(request, "dashboard/link_refused.html", {"refusal": str(exc)}, status=400)
        except ValidationError as exc:
            if form is None:
                raise
            _apply_errors(form, exc)
        else:
            if user is None:
                login(request, membership.user, backend=BACKEND)
            messages.success(request, f"Welcome to {membership.business.name}.")
            return redirect("dashboard:overview", slug=membership.business.slug)
    return render(
        request,
        "dashboard/invitation.html",
        {
            "invitation": found,
            "form": form,
            "has_account": has_account,
            "login_url": f"{reverse('dashboard:login')}?next={request.path}",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def business_new(request: HttpRequest) -> HttpResponse:
    form = BusinessForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        assert isinstance(request.user, User)  # login_required
        try:
            business = business_create(
                name=form.cleaned_data["name"],
                owner=request.user,
                timezone_name=form.cleaned_data["timezone"],
            )
        except ValidationError as exc:
            form.add_error("name", "; ".join(exc.messages))
        else:
            return redirect("dashboard:overview", slug=business.slug)
    return render(request, "dashboard/business_new.html", {"form": form})
