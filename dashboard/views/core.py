"""Overview with the onboarding checklist, the install page and API keys."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.selectors import agent_for
from agents.services import agent_update
from businesses import services as business_services
from businesses.models import ApiKey
from businesses.selectors import businesses_for_user
from dashboard import selectors
from dashboard.forms import ApiKeyForm, DemoPageForm, OriginsForm, ThemeForm
from dashboard.permissions import BusinessRequest, member_view


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """One business: straight in. Several: pick one. None: create one."""
    businesses = list(businesses_for_user(request.user))
    if len(businesses) == 1:
        return redirect("dashboard:overview", slug=businesses[0].slug)
    if not businesses:
        return redirect("dashboard:business_new")
    return render(request, "dashboard/home.html", {"businesses": businesses})


@member_view()
def overview(request: BusinessRequest) -> HttpResponse:
    business = request.business
    own = {settings.PUBLIC_URL, f"{request.scheme}://{request.get_host()}"}
    steps = selectors.onboarding_steps(business, own_origins=own)
    return render(
        request,
        "dashboard/overview.html",
        {
            "steps": steps,
            "steps_done": sum(1 for s in steps if s.done),
            "stats": selectors.overview_stats(business),
        },
    )


def widget_snippet(widget_key: str) -> str:
    return f'<script src="{settings.PUBLIC_URL}/widget.js" data-agent="{widget_key}" async></script>'


def _install(
    request: BusinessRequest,
    *,
    origins_form: OriginsForm | None = None,
    theme_form: ThemeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    business = request.business
    agent = agent_for(business)
    return render(
        request,
        "dashboard/install.html",
        {
            "snippet": widget_snippet(business.widget_key),
            "origins_form": origins_form
            or OriginsForm(initial={"origins": "\n".join(business.allowed_origins)}),
            "theme_form": theme_form
            or ThemeForm(initial={k: getattr(agent, k) for k in ThemeForm.base_fields}),
            "agent": agent,
            "demo_page_form": DemoPageForm(initial={"demo_page_enabled": business.demo_page_enabled}),
            "demo_page_url": f"{settings.PUBLIC_URL}/demo/{business.slug}/",
        },
        status=status,
    )


@member_view("owner")
@require_GET
def install(request: BusinessRequest) -> HttpResponse:
    return _install(request)


@member_view("owner")
@require_POST
def install_theme(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = ThemeForm(request.POST)
    if not form.is_valid():
        return _install(request, theme_form=form, status=400)
    agent_update(business, **form.cleaned_data)
    messages.success(request, "Theme saved. Your site's widget picks it up within a minute.")
    return redirect("dashboard:install", slug=business.slug)


@member_view("owner")
@require_POST
def install_demo_page(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = DemoPageForm(request.POST)
    form.is_valid()  # one optional checkbox: always valid, absent means off
    enabled = bool(form.cleaned_data.get("demo_page_enabled"))
    business_services.business_set_demo_page(business, enabled=enabled)
    messages.success(request, "Demo page published." if enabled else "Demo page turned off.")
    return redirect("dashboard:install", slug=business.slug)


@member_view("owner")
@require_POST
def install_origins(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = OriginsForm(request.POST)
    if not form.is_valid():
        return _install(request, origins_form=form, status=400)
    business_services.business_set_allowed_origins(business, origins=form.cleaned_data["origins"])
    messages.success(request, "Allowed origins saved.")
    return redirect("dashboard:install", slug=business.slug)


@member_view("owner")
@require_http_methods(["GET", "POST"])
def api_keys(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = ApiKeyForm(request.POST or None)
    issued = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            # The secret is rendered in this one response and never again (only its hash is stored).
            issued = business_services.api_key_issue(
                business, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
            )
            form = ApiKeyForm()
        else:
            status = 400
    keys = ApiKey.objects.filter(business=business).order_by("-created_at")
    return render(
        request, "dashboard/api_keys.html", {"form": form, "issued": issued, "keys": keys}, status=status
    )


@member_view("owner", api_key_id="api_key")
@require_POST
def api_key_revoke(request: BusinessRequest, api_key_id: int) -> HttpResponse:
    business = request.business
    selectors.api_key_or_404(business, api_key_id)
    business_services.api_key_revoke(business, api_key_id=api_key_id)
    messages.success(request, "Key revoked. Requests that use it are now refused.")
    return redirect("dashboard:api_keys", slug=business.slug)
