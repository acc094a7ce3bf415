"""Outbound webhooks (owners only): the endpoints (list; create, with the signing secret shown once), one
endpoint with its recent deliveries and their attempts, enable again, send a test event, delete."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.forms import WebhookEndpointForm
from dashboard.permissions import BusinessRequest, member_view
from webhooks import selectors, services


@member_view("owner")
@require_http_methods(["GET", "POST"])
def webhooks(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = WebhookEndpointForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                # The secret is rendered in this one response; afterwards the page never shows it again.
                created = services.endpoint_create(
                    business=business, url=data["url"], events=data["events"], description=data["description"]
                )
            except ValidationError as exc:
                if hasattr(exc, "error_dict"):
                    for field, errors in exc.error_dict.items():
                        form.add_error(field, errors)
                else:
                    form.add_error(None, exc)
            else:
                form = WebhookEndpointForm()
        if created is None:
            status = 400
    return render(
        request,
        "dashboard/webhooks.html",
        {"form": form, "created": created, "endpoints": selectors.endpoints(business)},
        status=status,
    )


@member_view("owner", endpoint_id="webhook_endpoint")
@require_GET
def webhook_endpoint(request: BusinessRequest, endpoint_id: int) -> HttpResponse:
    business = request.business
    endpoint = selectors.endpoint_or_404(business, endpoint_id)
    return render(
        request,
        "dashboard/webhook_endpoint.html",
        {"endpoint": endpoint, "deliveries": selectors.recent_deliveries(business, endpoint)},
    )


@member_view("owner", endpoint_id="webhook_endpoint")
@require_POST
def webhook_endpoint_enable(request: BusinessRequest, endpoint_id: int) -> HttpResponse:
    business = request.business
    services.endpoint_enable(business=business, endpoint_id=endpoint_id)
    messages.success(request, "Endpoint enabled: it gets the events from now on.")
    return redirect("dashboard:webhook_endpoint", slug=business.slug, endpoint_id=endpoint_id)


@member_view("owner", endpoint_id="webhook_endpoint")
@require_POST
def webhook_endpoint_test(request: BusinessRequest, endpoint_id: int) -> HttpResponse:
    business = request.business
    if services.endpoint_send_test(business=business, endpoint_id=endpoint_id) is None:
        messages.error(request, "The endpoint is disabled: enable it first.")
    else:
        messages.success(request, "Test event queued. Its delivery shows below in a moment.")
    return redirect("dashboard:webhook_endpoint", slug=business.slug, endpoint_id=endpoint_id)


@member_view("owner", endpoint_id="webhook_endpoint")
@require_POST
def webhook_endpoint_delete(request: BusinessRequest, endpoint_id: int) -> HttpResponse:
    business = request.business
    services.endpoint_delete(business=business, endpoint_id=endpoint_id)
    messages.success(request, "Endpoint deleted, with its delivery log.")
    return redirect("dashboard:webhooks", slug=business.slug)
