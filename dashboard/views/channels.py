"""Messaging channels: connect WhatsApp, Messenger and Instagram."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.permissions import member_view


@member_view("owner")
@require_GET
def channels(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/channels.html", {})
