"""Agent settings and the playground beside them."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from dashboard.permissions import member_view


@member_view("owner")
@require_http_methods(["GET", "POST"])
def agent(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/agent.html", {})
