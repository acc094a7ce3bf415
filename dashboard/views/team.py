"""The team page (owners only): the business's members, invitations by email with a role, and revoking them."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from businesses import selectors
from businesses.services import invitation_create, invitation_revoke
from dashboard.forms import InvitationForm
from dashboard.permissions import BusinessRequest, member_view


@member_view("owner")
@require_http_methods(["GET", "POST"])
def team(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = InvitationForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                invitation = invitation_create(
                    business=business,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=request.user,
                )
            except ValidationError as exc:
                for field, field_messages in exc.message_dict.items():
                    for message in field_messages:
                        form.add_error(field, message)
            else:
                messages.success(
                    request,
                    f"Invitation sent to {invitation.email} ({invitation.get_role_display().lower()}).",
                )
                return redirect("dashboard:team", slug=business.slug)
        status = 400
    return render(
        request,
        "dashboard/team.html",
        {
            "form": form,
            "members": selectors.members(business),
            "invitations": selectors.invitations_pending(business),
            "invitation_days": settings.INVITATION_MAX_AGE // 86400,
        },
        status=status,
    )


@member_view("owner", invitation_id="invitation")
@require_POST
def team_invitation_revoke(request: BusinessRequest, invitation_id: int) -> HttpResponse:
    business = request.business
    if invitation_revoke(business, invitation_id=invitation_id):
        messages.success(request, "Invitation withdrawn: its link no longer works.")
    return redirect("dashboard:team", slug=business.slug)
