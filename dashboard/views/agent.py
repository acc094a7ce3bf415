"""Agent settings, with the playground (the real widget, talking to the real agent) beside them."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from agents.selectors import agent_for
from businesses.selectors import origin_allowed
from businesses.services import business_set_allowed_origins
from dashboard.forms import DAYS, AgentForm
from dashboard.permissions import BusinessRequest, member_view
from dashboard.services import agent_settings_save


@member_view("owner")
@require_http_methods(["GET", "POST"])
def agent(request: BusinessRequest) -> HttpResponse:
    business = request.business
    current = agent_for(business)
    form = AgentForm(request.POST or None, initial=AgentForm.initial_from(current))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                saved = agent_settings_save(business, **form.cleaned_data)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
            else:
                messages.success(
                    request,
                    "Saved. The playground now answers with these settings."
                    + (" The regression suite is running against them." if saved.suite_started else ""),
                )
                return redirect("dashboard:agent", slug=business.slug)
        status = 400
    return render(
        request,
        "dashboard/agent.html",
        {
            "form": form,
            "agent": current,
            "hours_fields": [form[f"hours_{day}"] for day, _ in DAYS],
            "main_fields": [f for f in form if not f.name.startswith("hours_")],
            "page_origin": _page_origin(request),
            "origin_ok": origin_allowed(business, _page_origin(request)),
        },
        status=status,
    )


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
