"""Agent settings as a draft, with the playground (the real widget, talking to the real agent with the draft)
beside them, and the draft's check by the regression suite before it is published (docs/admin.md, "Draft and
publish")."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.disclosure import DISCLOSURE_LANGUAGES
from agents.selectors import agent_for
from agents.services import agent_draft_discard, agent_update
from businesses.selectors import origin_allowed
from businesses.services import business_set_allowed_origins
from dashboard.forms import DAYS, AgentForm
from dashboard.permissions import BusinessRequest, member_view
from dashboard.services import agent_settings_draft
from messaging.visitors import playground_token_issue
from regressions import gate
from regressions.services import draft_run_start


@member_view("owner")
@require_http_methods(["GET", "POST"])
def agent(request: BusinessRequest) -> HttpResponse:
    business = request.business
    current = agent_for(business)
    form = AgentForm(request.POST or None, initial=AgentForm.initial_from(current.with_draft()))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                saved = agent_settings_draft(business, **form.cleaned_data)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
            else:
                if not saved.agent.draft:
                    messages.info(request, "Nothing differs from the published settings: there is no draft.")
                else:
                    messages.success(
                        request,
                        "Saved as a draft: the playground answers with it, customers do not yet."
                        + (" The regression suite is checking it." if saved.checking else ""),
                    )
                return redirect("dashboard:agent", slug=business.slug)
        status = 400
    return render(
        request,
        "dashboard/agent.html",
        {
            "form": form,
            "agent": current,
            "check": gate.draft_check(business),
            "hours_fields": [form[f"hours_{day}"] for day, _ in DAYS],
            "disclosure_fields": [form[f"disclosure_{language}"] for language in DISCLOSURE_LANGUAGES],
            "main_fields": [f for f in form if not f.name.startswith(("hours_", "disclosure_"))],
            "page_origin": _page_origin(request),
            "origin_ok": origin_allowed(business, _page_origin(request)),
            "playground_token": playground_token_issue(business.pk),
        },
        status=status,
    )


@member_view("owner")
@require_GET
def agent_draft_status(request: BusinessRequest) -> HttpResponse:
    """The draft's card alone, which the page reloads while the suite is checking the draft."""
    business = request.business
    return render(
        request,
        "dashboard/_draft.html",
        {"agent": agent_for(business), "check": gate.draft_check(business)},
    )


@member_view("owner")
@require_POST
def agent_publish(request: BusinessRequest) -> HttpResponse:
    business = request.business
    try:
        changed = gate.draft_publish(business)
    except gate.PublishBlocked as exc:
        messages.error(request, str(exc))
    else:
        if changed:
            messages.success(request, "Published: customers now get the new settings.")
        else:
            messages.info(request, "There was no draft to publish.")
    return redirect("dashboard:agent", slug=business.slug)


@member_view("owner")
@require_POST
def agent_discard(request: BusinessRequest) -> HttpResponse:
    agent_draft_discard(request.business)
    messages.success(request, "Draft discarded: the playground answers with the published settings again.")
    return redirect("dashboard:agent", slug=request.business.slug)


@member_view("owner")
@require_POST
def agent_check(request: BusinessRequest) -> HttpResponse:
    """Run the suite on the draft again (after a failed run, or new data)."""
    business = request.business
    if draft_run_start(business=business) is None:
        messages.info(request, "There is no draft, or no regression suite, to check.")
    return redirect("dashboard:agent", slug=business.slug)


@member_view("owner")
@require_POST
def agent_publish_rule(request: BusinessRequest) -> HttpResponse:
    required = request.POST.get("publish_requires_suite") == "on"
    agent_update(request.business, publish_requires_suite=required)
    messages.success(
        request,
        "Drafts are published only when the regression suite passes."
        if required
        else "Drafts can be published whatever the regression suite says.",
    )
    return redirect("dashboard:agent", slug=request.business.slug)


def _page_origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


@member_view("owner")
@require_POST
def agent_playground_allow(request: BusinessRequest) -> HttpResponse:
    """Let the widget connect from this admin's own address, so that the playground can talk to the agent.

    The widget's websocket accepts only the business's allowed origins; the admin is just another page to
    it. Adding the admin's address is explicit (a button), and harmless: only this service serves pages there.
    """
    business = request.business
    business_set_allowed_origins(business, origins=[*business.allowed_origins, _page_origin(request)])
    return redirect("dashboard:agent", slug=business.slug)
