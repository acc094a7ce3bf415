"""Channel squatting: an id is connected only once Meta confirms the token controls it, and to one business.

Every connect goes through the real service against the Graph API stand-in (tests/fixtures/meta.py), which
confirms only what a test granted and answers like Meta otherwise (190 for an unknown token, 100/33 for an
object the token may not read, a queued 403).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from messaging.meta import intake
from messaging.meta.accounts import (
    ChannelAccountError,
    channel_account_connect,
    channel_account_connect_embedded,
)
from messaging.models import ChannelAccount, Message, WebhookDelivery
from tests.factories import BusinessFactory
from tests.fixtures.meta import GraphStandIn, signed, wa_change, wa_delivery, wa_text

WABA_A, PHONE_A, TOKEN_A = "WABA_A", "1065400000001", "EAAG-token-of-a-0123456789"
WABA_B, PHONE_B, TOKEN_B = "WABA_B", "1065400000002", "EAAG-token-of-b-0123456789"


def _nothing_stored() -> None:
    assert ChannelAccount.objects.count() == 0


def _wa(business: Any, **fields: Any) -> ChannelAccount:
    args: dict[str, Any] = {"access_token": TOKEN_B, "waba_id": WABA_B, "phone_number_id": PHONE_B}
    args.update(fields)
    return channel_account_connect(business=business, kind="whatsapp", **args)


# --- WhatsApp ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_token_nobody_granted_connects_nothing(graph_api: GraphStandIn) -> None:
    squatter = BusinessFactory()
    with pytest.raises(ChannelAccountError, match="Meta refused to show WhatsApp Business Account WABA_A"):
        _wa(squatter, access_token="EAAG-made-up-token-0000000", waba_id=WABA_A, phone_number_id=PHONE_A)
    _nothing_stored()
    assert [r.path.split("?")[0] for r in graph_api.gets()] == ["/v23.0/WABA_A/phone_numbers"]
    # The token went in the header, never in the URL.
    assert "EAAG" not in graph_api.gets()[0].path


@pytest.mark.django_db(transaction=True)
def test_b_cannot_connect_a_s_number_with_b_s_own_token(graph_api: GraphStandIn) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_waba(TOKEN_A, WABA_A, {PHONE_A: "+1 555-000-0001"})
    graph_api.grant_waba(TOKEN_B, WABA_B, {PHONE_B: "+1 555-000-0002"})
    # B's valid token, A's WABA: Meta does not let B read it.
    with pytest.raises(ChannelAccountError, match="Meta refused to show WhatsApp Business Account WABA_A"):
        _wa(shop_b, waba_id=WABA_A, phone_number_id=PHONE_A)
    # B's own WABA, A's number (a number of another WABA): not listed there.
    with pytest.raises(ChannelAccountError, match=f"phone number {PHONE_A} is not a number of .* {WABA_B}"):
        _wa(shop_b, waba_id=WABA_B, phone_number_id=PHONE_A)
    _nothing_stored()
    # A connects its own; the display number is Meta's, not what the form said.
    account = _wa(
        shop_a, access_token=TOKEN_A, waba_id=WABA_A, phone_number_id=PHONE_A, display_phone_number="999"
    )
    assert (account.business_id, account.waba_id, account.phone_number_id, account.display_phone_number) == (
        shop_a.pk,
        WABA_A,
        PHONE_A,
        "15550000001",
    )
    assert ChannelAccount.objects.filter(business=shop_b).count() == 0


@pytest.mark.django_db(transaction=True)
def test_meta_s_403_connects_nothing(graph_api: GraphStandIn) -> None:
    shop = BusinessFactory()
    graph_api.grant_waba(TOKEN_B, WABA_B, {PHONE_B: "15550000002"})
    graph_api.fail(403, code=200, message="(#200) Permissions error")
    with pytest.raises(ChannelAccountError, match=r"\(200: \(#200\) Permissions error\)"):
        _wa(shop)
    _nothing_stored()


@pytest.mark.django_db(transaction=True)
def test_meta_unreachable_connects_nothing(graph_api: GraphStandIn) -> None:
    shop = BusinessFactory()
    graph_api.grant_waba(TOKEN_B, WABA_B, {PHONE_B: "15550000002"})
    graph_api.fail(503, times=3)
    with pytest.raises(ChannelAccountError, match="Meta could not be reached"):
        _wa(shop)
    _nothing_stored()


@pytest.mark.django_db(transaction=True)
def test_an_id_belongs_to_one_business_even_when_both_hold_a_token(graph_api: GraphStandIn) -> None:
    # Two businesses both granted on one WABA (an agency's token, say): the number still goes to the first.
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_waba(TOKEN_A, WABA_A, {PHONE_A: "15550000001"})
    graph_api.grant_waba(TOKEN_B, WABA_A, {PHONE_A: "15550000001"})
    first = _wa(shop_a, access_token=TOKEN_A, waba_id=WABA_A, phone_number_id=PHONE_A)
    with pytest.raises(ChannelAccountError, match="already connected to another business"):
        _wa(shop_b, waba_id=WABA_A, phone_number_id=PHONE_A)
    assert list(ChannelAccount.objects.values_list("pk", "business_id", "access_token")) == [
        (first.pk, shop_a.pk, TOKEN_A)
    ]


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_second_active_account_for_an_id() -> None:
    from django.db import IntegrityError, transaction

    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    ChannelAccount.objects.create(business=shop_a, kind="whatsapp", phone_number_id=PHONE_A)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChannelAccount.objects.create(business=shop_b, kind="whatsapp", phone_number_id=PHONE_A)


@pytest.mark.django_db(transaction=True)
def test_a_squatter_cannot_receive_the_owner_s_customers(
    graph_api: GraphStandIn, meta_app: None, client: Any
) -> None:
    """End to end: B tries A's number, fails; A's customer's delivery reaches A only."""
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_waba(TOKEN_A, WABA_A, {PHONE_A: "15550000001"})
    graph_api.grant_waba(TOKEN_B, WABA_B, {PHONE_B: "15550000002"})
    with pytest.raises(ChannelAccountError):
        _wa(shop_b, waba_id=WABA_A, phone_number_id=PHONE_A)
    _wa(shop_a, access_token=TOKEN_A, waba_id=WABA_A, phone_number_id=PHONE_A)
    body, header = signed(
        wa_delivery(wa_change(PHONE_A, messages=[wa_text("hi", wamid="wamid.sq1")]), waba_id=WABA_A)
    )
    response = client.post(
        "/webhooks/whatsapp", data=body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=header
    )
    assert response.status_code == 200
    intake.webhook_delivery_process(delivery_id=WebhookDelivery.objects.get().pk)
    assert list(Message.objects.values_list("business_id", "text")) == [(shop_a.pk, "hi")]


# --- Messenger and Instagram ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_messenger_needs_that_page_s_own_token(graph_api: GraphStandIn) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_page("PAGE_TOKEN_A", "PAGE_A", name="Shop A")
    graph_api.grant_page("PAGE_TOKEN_B", "PAGE_B")
    graph_api.grant_waba("USER_TOKEN_B", WABA_B, {PHONE_B: "1"})  # a valid token, but a person's
    for token in ("PAGE_TOKEN_B", "USER_TOKEN_B"):
        with pytest.raises(ChannelAccountError, match="not a Page access token of page PAGE_A"):
            channel_account_connect(business=shop_b, kind="messenger", page_id="PAGE_A", access_token=token)
    with pytest.raises(ChannelAccountError, match="190"):
        channel_account_connect(business=shop_b, kind="messenger", page_id="PAGE_A", access_token="made-up")
    _nothing_stored()
    account = channel_account_connect(
        business=shop_a, kind="messenger", page_id="PAGE_A", access_token="PAGE_TOKEN_A"
    )
    assert (account.page_id, account.name, account.business_id) == ("PAGE_A", "Shop A", shop_a.pk)
    with pytest.raises(ChannelAccountError, match="Facebook Page is already connected to another business"):
        graph_api.grant_page("PAGE_TOKEN_A2", "PAGE_A")
        channel_account_connect(
            business=shop_b, kind="messenger", page_id="PAGE_A", access_token="PAGE_TOKEN_A2"
        )
    assert ChannelAccount.objects.filter(business=shop_b).count() == 0


@pytest.mark.django_db(transaction=True)
def test_instagram_takes_the_account_linked_to_the_page(graph_api: GraphStandIn) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_page("PAGE_TOKEN_A", "PAGE_A", instagram_account_id="IG_A")
    graph_api.grant_page("PAGE_TOKEN_B", "PAGE_B", instagram_account_id="IG_B")
    graph_api.grant_page("PAGE_TOKEN_C", "PAGE_C")  # no Instagram account linked
    # B's page, A's Instagram account.
    with pytest.raises(ChannelAccountError, match="IG_A is not the account linked to page PAGE_B"):
        channel_account_connect(
            business=shop_b,
            kind="instagram",
            instagram_account_id="IG_A",
            page_id="PAGE_B",
            access_token="PAGE_TOKEN_B",
        )
    # A's page with B's token.
    with pytest.raises(ChannelAccountError, match="not a Page access token of page PAGE_A"):
        channel_account_connect(
            business=shop_b,
            kind="instagram",
            instagram_account_id="IG_A",
            page_id="PAGE_A",
            access_token="PAGE_TOKEN_B",
        )
    with pytest.raises(ChannelAccountError, match="page PAGE_C has no Instagram professional account"):
        channel_account_connect(
            business=shop_b, kind="instagram", page_id="PAGE_C", access_token="PAGE_TOKEN_C"
        )
    with pytest.raises(ChannelAccountError, match="page_id is required"):
        channel_account_connect(
            business=shop_b, kind="instagram", instagram_account_id="IG_A", access_token="x"
        )
    _nothing_stored()
    # Without the id, Meta's linked account is stored.
    account = channel_account_connect(
        business=shop_a, kind="instagram", page_id="PAGE_A", access_token="PAGE_TOKEN_A"
    )
    assert (account.instagram_account_id, account.page_id) == ("IG_A", "PAGE_A")
    assert account.routing_id == "IG_A"


# --- Embedded Signup --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_embedded_signup_connects_what_meta_granted(graph_api: GraphStandIn, meta_app: None) -> None:
    shop = BusinessFactory()
    graph_api.signup_code("CODE_1", "EAAG-business-token-0001", {WABA_A: {PHONE_A: "+1 555 000 0001"}})
    account = channel_account_connect_embedded(business=shop, code="CODE_1")
    assert (account.waba_id, account.phone_number_id, account.display_phone_number, account.access_token) == (
        WABA_A,
        PHONE_A,
        "15550000001",
        "EAAG-business-token-0001",
    )
    assert graph_api.subscribed == [WABA_A]
    exchange = graph_api.gets()[0]
    assert exchange.path.startswith("/v23.0/oauth/access_token?")
    assert exchange.body == {
        "client_id": "1234567890",
        "client_secret": "test-app-secret-0123456789",
        "code": "CODE_1",
    }
    # The code is single use.
    with pytest.raises(ChannelAccountError, match="Meta refused the signup code"):
        channel_account_connect_embedded(business=BusinessFactory(), code="CODE_1")
    assert ChannelAccount.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_embedded_signup_ignores_ids_the_browser_made_up(graph_api: GraphStandIn, meta_app: None) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_waba(TOKEN_A, WABA_A, {PHONE_A: "15550000001"})
    channel_account_connect(
        business=shop_a, kind="whatsapp", access_token=TOKEN_A, waba_id=WABA_A, phone_number_id=PHONE_A
    )
    graph_api.signup_code(
        "CODE_B1", "EAAG-b-business-token", {WABA_B: {PHONE_B: "15550000002", "1065400000003": "3"}}
    )
    # The session info is posted by the browser: B claims A's WABA, then A's number.
    with pytest.raises(ChannelAccountError, match="WABA_A was not granted in this signup"):
        channel_account_connect_embedded(
            business=shop_b, code="CODE_B1", waba_id=WABA_A, phone_number_id=PHONE_A
        )
    graph_api.signup_code("CODE_B2", "EAAG-b-business-token", {})
    with pytest.raises(ChannelAccountError, match=f"phone number {PHONE_A} is not a number of .* {WABA_B}"):
        channel_account_connect_embedded(
            business=shop_b, code="CODE_B2", waba_id=WABA_B, phone_number_id=PHONE_A
        )
    graph_api.signup_code("CODE_B3", "EAAG-b-business-token", {})
    with pytest.raises(ChannelAccountError, match="choose the phone number"):
        channel_account_connect_embedded(business=shop_b, code="CODE_B3")
    assert ChannelAccount.objects.filter(business=shop_b).count() == 0
    assert graph_api.subscribed == []
    graph_api.signup_code("CODE_B4", "EAAG-b-business-token", {})
    account = channel_account_connect_embedded(business=shop_b, code="CODE_B4", phone_number_id=PHONE_B)
    assert (account.business_id, account.waba_id, account.phone_number_id) == (shop_b.pk, WABA_B, PHONE_B)
    assert graph_api.subscribed == [WABA_B]


@pytest.mark.django_db(transaction=True)
def test_embedded_signup_of_a_number_another_business_holds(graph_api: GraphStandIn, meta_app: None) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    graph_api.grant_waba(TOKEN_A, WABA_A, {PHONE_A: "15550000001"})
    channel_account_connect(
        business=shop_a, kind="whatsapp", access_token=TOKEN_A, waba_id=WABA_A, phone_number_id=PHONE_A
    )
    graph_api.signup_code("CODE_X", "EAAG-x-token", {WABA_A: {PHONE_A: "15550000001"}})
    with pytest.raises(ChannelAccountError, match="WhatsApp number is already connected to another business"):
        channel_account_connect_embedded(business=shop_b, code="CODE_X")
    assert graph_api.subscribed == []
    assert list(ChannelAccount.objects.values_list("business_id", flat=True)) == [shop_a.pk]


@pytest.mark.django_db(transaction=True)
def test_embedded_signup_refuses_a_token_of_another_app(
    graph_api: GraphStandIn, meta_app: None, settings: Any
) -> None:
    graph_api.signup_code("CODE_1", "EAAG-business-token-0001", {WABA_A: {PHONE_A: "1"}})
    settings.META_APP_ID = "999"  # the exchange itself is refused for a wrong client id
    with pytest.raises(ChannelAccountError, match="Meta refused the signup code"):
        channel_account_connect_embedded(business=BusinessFactory(), code="CODE_1")
    settings.META_APP_ID = ""
    with pytest.raises(ChannelAccountError, match="needs META_APP_ID"):
        channel_account_connect_embedded(business=BusinessFactory(), code="CODE_1")
    _nothing_stored()


def test_ownership_checks_send_no_token_in_a_url() -> None:
    # graph.get puts the token in the Authorization header; only the OAuth exchange and debug_token carry
    # credentials as query parameters, as Meta defines them.
    import inspect

    from messaging.meta import ownership

    source = inspect.getsource(ownership)
    assert json.dumps("access_token=") not in source
