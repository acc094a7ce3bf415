"""Messaging channels: connect WhatsApp, Messenger and Instagram; webhook URL and verify token for Meta."""

from __future__ import annotations

import secrets

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents.selectors import agent_for
from agents.services import agent_update
from dashboard.forms import ChannelConnectForm
from dashboard.permissions import BusinessRequest, member_view
from messaging.meta.accounts import ChannelAccountError, channel_account_connect, channel_account_disconnect
from messaging.meta.selectors import channel_accounts_list, webhook_urls
from messaging.models import ChannelAccount

KINDS = [(k.value, k.label) for k in ChannelAccount.Kind]
# The form fields each kind of account asks for (issue 6), in order.
FIELDS = {
    "whatsapp": [
        "name",
        "waba_id",
        "phone_number_id",
        "display_phone_number",
        "access_token",
        "app_secret",
        "verify_token",
        "wa_template_name",
        "template_language",
    ],
    "messenger": ["name", "page_id", "access_token", "app_secret", "verify_token"],
    "instagram": ["name", "instagram_account_id", "page_id", "access_token", "app_secret", "verify_token"],
}


def _fresh_form(kind: str) -> ChannelConnectForm:
    # A verify token the owner pastes into Meta: random, so that nobody can guess it.
    return ChannelConnectForm(initial={"kind": kind, "verify_token": secrets.token_urlsafe(24)}, prefix=kind)


def _page(
    request: BusinessRequest,
    *,
    bound: ChannelConnectForm | None = None,
    connected: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    business = request.business
    urls = webhook_urls()
    panels = []
    accounts = channel_accounts_list(business)
    for kind, label in KINDS:
        form = bound if bound is not None and bound.prefix == kind else _fresh_form(kind)
        panels.append(
            {
                "kind": kind,
                "label": label,
                "webhook_url": urls[kind],
                "accounts": [a for a in accounts if a.kind == kind],
                "form": form,
                "fields": [form[name] for name in FIELDS[kind]],
                "open": bound is not None and bound.prefix == kind,
            }
        )
    return render(
        request,
        "dashboard/channels.html",
        {"panels": panels, "connected": connected, "ask_rating": agent_for(business).ask_channel_rating},
        status=status,
    )


@member_view("owner")
@require_GET
def channels(request: BusinessRequest) -> HttpResponse:
    return _page(request)


@member_view("owner")
@require_POST
def channel_connect(request: BusinessRequest, kind: str) -> HttpResponse:
    business = request.business
    if kind not in ChannelAccount.Kind.values:
        return redirect("dashboard:channels", slug=business.slug)
    form = ChannelConnectForm(request.POST, prefix=kind)
    if form.is_valid() and form.cleaned_data["kind"] == kind:
        data = form.cleaned_data
        try:
            account = channel_account_connect(
                business=business,
                kind=kind,
                access_token=data["access_token"],
                name=data["name"],
                waba_id=data["waba_id"],
                phone_number_id=data["phone_number_id"],
                display_phone_number=data["display_phone_number"],
                page_id=data["page_id"],
                instagram_account_id=data["instagram_account_id"],
                app_secret=data["app_secret"],
                verify_token=data["verify_token"],
                template_name=data["wa_template_name"],
                template_language=data["template_language"] or "en_US",
            )
        except ChannelAccountError as exc:
            form.add_error(None, str(exc))
        else:
            # The verify token is shown in clear this once, next to the URL, to paste into Meta.
            return _page(
                request,
                connected={
                    "kind": account.get_kind_display(),
                    "webhook_url": webhook_urls()[kind],
                    "verify_token": data["verify_token"],
                },
            )
    return _page(request, bound=form, status=400)


@member_view("owner", account_id="channel_account")
@require_POST
def channel_disconnect(request: BusinessRequest, account_id: int) -> HttpResponse:
    business = request.business
    if channel_account_disconnect(business=business, account_id=account_id):
        messages.success(request, "Disconnected. Messages on that account are no longer answered.")
    return redirect("dashboard:channels", slug=business.slug)


@member_view("owner")
@require_POST
def channel_rating(request: BusinessRequest) -> HttpResponse:
    """The agent's ``ask_channel_rating``: not drafted (it asks after a conversation, it changes no answer)."""
    ask = request.POST.get("ask_channel_rating") == "on"
    agent_update(request.business, ask_channel_rating=ask)
    messages.success(
        request,
        "Customers are asked to rate a conversation when staff close it."
        if ask
        else "Customers are no longer asked to rate conversations.",
    )
    return redirect("dashboard:channels", slug=request.business.slug)
