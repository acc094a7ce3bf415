"""Agent settings, with the playground (the real widget, talking to the real agent) beside them."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agents.selectors import agent_for
from agents.services import agent_update
from dashboard.forms import DAYS, AgentForm
from dashboard.permissions import member_view


@member_view("owner")
@require_http_methods(["GET", "POST"])
def agent(request: HttpRequest) -> HttpResponse:
    business = request.business  # type: ignore[attr-defined]
    current = agent_for(business)
    form = AgentForm(request.POST or None, initial=AgentForm.initial_from(current))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                agent_update(business, **form.cleaned_data)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
            else:
                messages.success(request, "Saved. The playground now answers with these settings.")
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
            "public_url": settings.PUBLIC_URL,
        },
        status=status,
    )
