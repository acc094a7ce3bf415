"""Who calls the REST API: a business's API key (``Authorization: Bearer <key>``), its scope and its rate.

Each operation names the scope it needs (``READ``, ``WRITE``, ``CONVERSATIONS``: the instances below). A
request is answered 401 without a live key, 429 over the key's rate (``API_RATE_LIMIT_PER_MINUTE``, counted in
Redis per key, with ``Retry-After``) and 403 when the key lacks the scope. The view then finds the business
with ``api_business(request)``: every query it makes is scoped to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from businesses.models import ApiScope, Business
from businesses.selectors import api_key_for
from common.problems import Problem
from common.ratelimit import fixed_window_hit


@dataclass(frozen=True)
class ApiCaller:
    api_key_id: int
    business: Business
    scopes: frozenset[str]


class ApiKeyAuth(HttpBearer):
    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope: str = ApiScope(scope).value

    def authenticate(self, request: HttpRequest, token: str) -> ApiCaller | None:
        api_key = api_key_for(token.strip())
        if api_key is None:
            return None
        wait = fixed_window_hit(f"api:{api_key.pk}", limit=settings.API_RATE_LIMIT_PER_MINUTE, window=60)
        if wait is not None:
            raise Problem(
                429,
                f"over this key's limit of {settings.API_RATE_LIMIT_PER_MINUTE} requests a minute",
                code="rate_limited",
                headers={"Retry-After": str(wait)},
            )
        if self.scope not in api_key.scopes:
            raise Problem(
                403,
                f"this key lacks the {self.scope!r} scope (it has: {', '.join(api_key.scopes) or 'none'})",
                code="scope_missing",
            )
        return ApiCaller(api_key_id=api_key.pk, business=api_key.business, scopes=frozenset(api_key.scopes))


READ = ApiKeyAuth(ApiScope.READ)
WRITE = ApiKeyAuth(ApiScope.WRITE)
CONVERSATIONS = ApiKeyAuth(ApiScope.CONVERSATIONS)


def api_business(request: HttpRequest) -> Business:
    """The business of the key that authenticated this request (set by ``ApiKeyAuth``)."""
    caller = getattr(request, "auth", None)
    assert isinstance(caller, ApiCaller), "an operation without ApiKeyAuth"
    return caller.business
