"""What Meta confirms a token controls, asked before an account is connected.

Deliveries signed with the deployment's app secret are routed by id alone, so an id stored for the wrong
business hands it that business's customers. Nothing a tenant types is trusted: each check asks the Graph API
with the tenant's token and returns only what Meta answered (``Confirmed``). Every refusal raises
``OwnershipError`` with a sentence for the person connecting; reads happen outside any transaction.

- WhatsApp: ``GET /{waba-id}/phone_numbers`` with the token lists the WABA's numbers: the token can manage the
  WABA (Meta refuses otherwise) and the phone number id is one of them.
- Messenger: ``GET /me`` with the token answers the page itself only for a Page access token of that page.
- Instagram (Facebook Login): the page check above, then ``GET /{page-id}?fields=instagram_business_account``
  names the professional account linked to the page.
- Embedded Signup: the code from the JS SDK is exchanged (``GET /oauth/access_token``); ``GET /debug_token``
  (with the app token) names the WABAs the business granted (``granular_scopes[].target_ids``); the numbers
  come from the WABA as above. The ids the browser reports are only a choice among those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from messaging.meta import graph

WABA_SCOPES = ("whatsapp_business_management", "whatsapp_business_messaging")
# A WABA has a handful of numbers; the cap bounds a hostile or broken pagination.
MAX_PAGES = 20


class OwnershipError(ValueError):
    """Meta did not confirm that the token controls the ids (or could not be asked)."""


@dataclass(frozen=True)
class Confirmed:
    """Ids (and names) as Meta gave them for the token."""

    waba_id: str = ""
    phone_number_id: str = ""
    display_phone_number: str = ""
    page_id: str = ""
    instagram_account_id: str = ""
    name: str = ""


def _get(
    node: str, *, token: str | None, edge: str = "", params: dict[str, str] | None = None
) -> graph.GraphResult:
    try:
        return graph.get(node, token=token, edge=edge, params=params)
    except graph.TransientGraphError as exc:
        raise OwnershipError(f"Meta could not be reached to verify the account ({exc}); try again") from exc


def _refused(result: graph.GraphResult) -> str:
    detail = f"{result.error_code}: {result.error_message}" if result.error_code else f"HTTP {result.status}"
    return detail[:300]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)[:32]


def waba_phone_numbers(*, token: str, waba_id: str) -> dict[str, str]:
    """The WABA's phone numbers ({phone number id: display number, digits only}), as the token may read them."""
    numbers: dict[str, str] = {}
    params = {"fields": "id,display_phone_number,verified_name", "limit": "100"}
    for _ in range(MAX_PAGES):
        result = _get(waba_id, token=token, edge="phone_numbers", params=params)
        if not result.ok:
            raise OwnershipError(
                f"Meta refused to show WhatsApp Business Account {waba_id} to this token "
                f"({_refused(result)}): the token must manage that WABA"
            )
        data = result.body.get("data")
        for row in data if isinstance(data, list) else []:
            if isinstance(row, dict) and row.get("id"):
                numbers[str(row["id"])] = _digits(str(row.get("display_phone_number") or ""))
        paging = result.body.get("paging")
        after = paging.get("cursors", {}).get("after") if isinstance(paging, dict) else None
        if not (isinstance(paging, dict) and paging.get("next") and after):
            break
        params = {**params, "after": str(after)}
    return numbers


def whatsapp(*, token: str, waba_id: str, phone_number_id: str) -> Confirmed:
    numbers = waba_phone_numbers(token=token, waba_id=waba_id)
    if phone_number_id not in numbers:
        raise OwnershipError(
            f"phone number {phone_number_id} is not a number of WhatsApp Business Account {waba_id} "
            "(Meta does not list it)"
        )
    return Confirmed(
        waba_id=waba_id, phone_number_id=phone_number_id, display_phone_number=numbers[phone_number_id]
    )


def page(*, token: str, page_id: str) -> Confirmed:
    # A Page access token's /me is the page; a user or system-user token answers a person (or refuses).
    result = _get("me", token=token, params={"fields": "id,name"})
    if not result.ok:
        raise OwnershipError(f"Meta refused the token ({_refused(result)})")
    if str(result.body.get("id") or "") != page_id:
        raise OwnershipError(f"the token is not a Page access token of page {page_id}")
    return Confirmed(page_id=page_id, name=str(result.body.get("name") or "")[:100])


def instagram(*, token: str, page_id: str, instagram_account_id: str) -> Confirmed:
    confirmed = page(token=token, page_id=page_id)
    result = _get(page_id, token=token, params={"fields": "instagram_business_account"})
    if not result.ok:
        raise OwnershipError(f"Meta refused to show page {page_id} to this token ({_refused(result)})")
    linked = result.body.get("instagram_business_account")
    linked_id = str(linked.get("id") or "") if isinstance(linked, dict) else ""
    if not linked_id:
        raise OwnershipError(f"page {page_id} has no Instagram professional account linked")
    if instagram_account_id and instagram_account_id != linked_id:
        raise OwnershipError(
            f"Instagram account {instagram_account_id} is not the account linked to page {page_id}"
        )
    return Confirmed(page_id=page_id, instagram_account_id=linked_id, name=confirmed.name)


def exchange_code(*, code: str) -> str:
    """The business token for an Embedded Signup code (single use, short-lived)."""
    if not settings.META_APP_ID or not settings.META_APP_SECRET:
        raise OwnershipError("Embedded Signup needs META_APP_ID and META_APP_SECRET")
    result = _get(
        "oauth/access_token",
        token=None,
        params={"client_id": settings.META_APP_ID, "client_secret": settings.META_APP_SECRET, "code": code},
    )
    token = str(result.body.get("access_token") or "") if result.ok else ""
    if not token:
        raise OwnershipError(f"Meta refused the signup code ({_refused(result)}); run the signup again")
    return token


def granted_wabas(*, token: str) -> list[str]:
    """WABA ids the business granted this app for the token (``debug_token`` granular scopes)."""
    app_token = f"{settings.META_APP_ID}|{settings.META_APP_SECRET}"
    result = _get("debug_token", token=app_token, params={"input_token": token})
    data = result.body.get("data") if result.ok else None
    if not isinstance(data, dict) or data.get("is_valid") is not True:
        raise OwnershipError("Meta says the signup token is not valid; run the signup again")
    if str(data.get("app_id") or "") != str(settings.META_APP_ID):
        raise OwnershipError("the signup token belongs to another Meta app")
    wabas: list[str] = []
    for scope in data.get("granular_scopes") or []:
        if isinstance(scope, dict) and scope.get("scope") in WABA_SCOPES:
            for target in scope.get("target_ids") or []:
                if str(target) not in wabas:
                    wabas.append(str(target))
    return wabas


def embedded_signup(*, code: str, waba_id: str = "", phone_number_id: str = "") -> tuple[str, Confirmed]:
    """The token and the WhatsApp number an Embedded Signup granted. ``waba_id`` / ``phone_number_id`` (the
    session info the JS SDK posts to the page) only choose among what Meta says was granted."""
    token = exchange_code(code=code)
    wabas = granted_wabas(token=token)
    if waba_id:
        if waba_id not in wabas:
            raise OwnershipError(f"WhatsApp Business Account {waba_id} was not granted in this signup")
    elif len(wabas) == 1:
        waba_id = wabas[0]
    else:
        raise OwnershipError(
            "the signup granted no WhatsApp Business Account"
            if not wabas
            else "choose the WhatsApp Business Account"
        )
    numbers = waba_phone_numbers(token=token, waba_id=waba_id)
    if phone_number_id:
        if phone_number_id not in numbers:
            raise OwnershipError(
                f"phone number {phone_number_id} is not a number of WhatsApp Business Account {waba_id}"
            )
    elif len(numbers) == 1:
        phone_number_id = next(iter(numbers))
    else:
        raise OwnershipError(
            f"WhatsApp Business Account {waba_id} has no phone number"
            if not numbers
            else "choose the phone number"
        )
    return token, Confirmed(
        waba_id=waba_id, phone_number_id=phone_number_id, display_phone_number=numbers[phone_number_id]
    )


def subscribe_app(*, token: str, waba_id: str) -> None:
    """Subscribe the deployment's app to the WABA's webhooks (``POST /{waba-id}/subscribed_apps``); without
    it Meta sends the number's messages nowhere."""
    try:
        result = graph.post(waba_id, {}, token=token, edge="subscribed_apps")
    except graph.TransientGraphError as exc:
        raise OwnershipError(f"Meta could not be reached to subscribe the app ({exc}); try again") from exc
    if not result.ok:
        raise OwnershipError(f"Meta refused to subscribe the app to WABA {waba_id} ({_refused(result)})")
