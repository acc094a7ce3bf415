"""Who may open which page of the admin.

Every view under ``/app/<slug>/`` is wrapped in :func:`member_view`. The decorator resolves the business
through ``membership_for`` (404 for anyone who is not a member, so that a business's existence never
leaks), and refuses staff on owner-only pages with 403. It also records the rule on the view function,
so that the permission tests can walk the URL resolver and check every route against its declared rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Concatenate, Literal, Protocol, cast

from django.apps import apps
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from businesses.models import Business, Membership
from businesses.selectors import membership_for

Role = Literal["owner", "member"]

# The kinds of row a URL may name ("app_label.Model"); each has a ``business`` foreign key.
OBJECT_KINDS: dict[str, str] = {
    "api_key": "businesses.ApiKey",
    "import": "catalogs.Import",
    "feed": "catalogs.FeedSource",
    "item": "catalogs.Item",
    "conversation": "messaging.Conversation",
    "message": "messaging.Message",
    "message_media": "messaging.MessageMedia",
    "channel_account": "messaging.ChannelAccount",
    "invitation": "businesses.Invitation",
    "curated_answer": "agents.CuratedAnswer",
    "regression_run": "regressions.RegressionRun",
    "webhook_endpoint": "webhooks.WebhookEndpoint",
}


@dataclass(frozen=True)
class Access:
    role: Role  # "owner": owners only; "member": owners and staff
    # URL keyword arguments that name a row of the business (kwarg -> kind), used by the generated tests.
    objects: dict[str, str]


class BusinessRequest(HttpRequest):
    """An ``HttpRequest`` that went through :func:`member_view`: a signed-in member of ``business``."""

    user: User
    membership: Membership
    business: Business


# A view under member_view: the request first, then the URL's keyword arguments (the slug taken off).
View = Callable[Concatenate[BusinessRequest, ...], HttpResponse]


class MemberView(Protocol):
    """What :func:`member_view` returns: the URL's view, carrying its rule for the permission tests."""

    dashboard_access: Access

    def __call__(self, request: HttpRequest, slug: str, **kwargs: Any) -> HttpResponse: ...


def member_view(role: Role = "member", **objects: str) -> Callable[[View], MemberView]:
    """Wrap a view of ``/app/<slug>/...``; ``objects`` maps URL kwargs to kinds of ``OBJECT_KINDS``.

    Every named row must belong to the member's business, or the answer is 404 before the view (or its
    method check) runs: another business's row is indistinguishable from a missing one.
    """
    unknown = set(objects.values()) - OBJECT_KINDS.keys()
    if unknown:
        raise ValueError(f"unknown object kinds: {sorted(unknown)}")

    def decorate(view: View) -> MemberView:
        @wraps(view)
        def wrapper(request: HttpRequest, slug: str, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = membership_for(request.user, slug)
            if role == "owner" and membership.role != Membership.Role.OWNER:
                raise PermissionDenied("Only the business owner can open this page.")
            for kwarg, kind in objects.items():
                model = apps.get_model(OBJECT_KINDS[kind])
                if not model._default_manager.filter(business=membership.business, pk=kwargs[kwarg]).exists():
                    raise Http404
            # The user is signed in and a member (membership_for): this request is now a BusinessRequest.
            member_request = cast(BusinessRequest, request)
            member_request.membership = membership
            member_request.business = membership.business
            return view(member_request, **kwargs)

        member = cast(MemberView, wrapper)
        member.dashboard_access = Access(role=role, objects=dict(objects))
        return member

    return decorate
