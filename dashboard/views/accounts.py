"""Sign in, sign out, sign up, and a further business for a signed-in person."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from businesses.services import business_create
from dashboard.forms import BusinessForm, SignInForm, SignUpForm
from dashboard.services import account_signup

login_view = auth_views.LoginView.as_view(
    template_name="dashboard/login.html", authentication_form=SignInForm, redirect_authenticated_user=True
)
logout_view = auth_views.LogoutView.as_view()


def _apply_errors(form: SignUpForm | BusinessForm, exc: ValidationError) -> None:
    for field, messages in exc.message_dict.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = account_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                business_name=form.cleaned_data["business_name"],
                timezone_name=form.cleaned_data["timezone"],
            )
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            login(request, result.user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("dashboard:overview", slug=result.business.slug)
    return render(request, "dashboard/signup.html", {"form": form})


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
