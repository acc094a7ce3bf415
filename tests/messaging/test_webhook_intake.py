"""Webhook endpoints: the GET handshake and signed POST intake (stored before the 200, nothing on 403)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client

from common import aio
from messaging.meta.signature import sign, signature_valid
from messaging.models import Contact, Message, WebhookDelivery
from tests.factories import BusinessFactory
from tests.fixtures.meta import APP_SECRET, VERIFY_TOKEN, connect, signed, wa_change, wa_delivery, wa_text

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/webhooks/whatsapp"


@pytest.fixture(autouse=True)
def _close_webhook_connections() -> Iterator[None]:
    # The view keeps connections on its own threads; the test database cannot be dropped while they live.
    yield
    aio.close_database_connections()


def post(client: Client, body: bytes, header: str | None, url: str = URL) -> object:
    extra = {"HTTP_X_HUB_SIGNATURE_256": header} if header is not None else {}
    return client.post(url, data=body, content_type="application/json", **extra)


# --- GET handshake ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["whatsapp", "messenger", "instagram", "meta"])
def test_handshake_echoes_the_challenge_as_plain_text(client: Client, meta_app: None, platform: str) -> None:
    response = client.get(
        f"/webhooks/{platform}",
        {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN},
    )
    assert response.status_code == 200
    assert response.content == b"1158201444"
    assert response["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "1158201444"},
        {"hub_mode": "subscribe", "hub_challenge": "1158201444", "hub_verify_token": VERIFY_TOKEN},
        {},
    ],
)
def test_handshake_refuses_anything_else(client: Client, meta_app: None, params: dict[str, str]) -> None:
    response = client.get(URL, params)
    assert response.status_code == 403
    assert b"1158201444" not in response.content


def test_handshake_without_any_configured_token_refuses_an_empty_token(client: Client) -> None:
    response = client.get(URL, {"hub.mode": "subscribe", "hub.challenge": "7", "hub.verify_token": ""})
    assert response.status_code == 403


def test_handshake_accepts_a_per_account_verify_token(client: Client) -> None:
    connect(BusinessFactory(), verify_token="shop-a-token")
    ok = client.get(URL, {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "shop-a-token"})
    wrong_platform = client.get(
        "/webhooks/messenger",
        {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "shop-a-token"},
    )
    assert (ok.status_code, ok.content) == (200, b"42")
    assert wrong_platform.status_code == 403


# --- POST signature -------------------------------------------------------------------------------------------


def test_valid_ascii_delivery_is_stored_before_the_200(client: Client, meta_app: None) -> None:
    body, header = signed(
        wa_delivery(wa_change("106540352242922", messages=[wa_text("hi", wamid="wamid.A")]))
    )
    response = post(client, body, header)
    assert response.status_code == 200
    assert response.content == b"EVENT_RECEIVED"
    delivery = WebhookDelivery.objects.get()
    assert bytes(delivery.body) == body
    assert delivery.platform == "whatsapp"
    assert delivery.signature == header
    assert delivery.state == WebhookDelivery.State.PENDING
    assert delivery.verified_accounts == []


def test_non_ascii_body_verifies_over_raw_bytes_and_reserialised_json_fails(
    client: Client, meta_app: None
) -> None:
    text = "Café ☕ — هل يوجد باللون الأزرق؟ 😀 äöå"
    payload = wa_delivery(wa_change("106540352242922", messages=[wa_text(text, wamid="wamid.U")]))
    # Meta escapes non-ASCII as \uXXXX with lowercase hex: json.dumps does exactly that.
    body, header = signed(payload)
    assert b"\\u00e4\\u00f6\\u00e5" in body
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert reserialised != body
    assert signature_valid(body, header, APP_SECRET)
    assert not signature_valid(reserialised, header, APP_SECRET)

    assert post(client, reserialised, header).status_code == 403
    assert WebhookDelivery.objects.count() == 0
    assert post(client, body, header).status_code == 200
    assert bytes(WebhookDelivery.objects.get().body) == body


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=" + "0" * 64,
        "deadbeef",  # no prefix
        "sha1=" + "0" * 40,  # the legacy header format is not accepted
        "sha256=ünïcode",
    ],
)
def test_bad_or_missing_signature_gets_403_and_nothing_is_stored(
    client: Client, meta_app: None, header: str | None
) -> None:
    business = BusinessFactory()
    connect(business)
    body, _ = signed(wa_delivery(wa_change("106540352242922", messages=[wa_text("hi", wamid="wamid.B")])))
    response = post(client, body, header)
    assert response.status_code == 403
    assert WebhookDelivery.objects.count() == 0
    assert Message.objects.count() == 0
    assert Contact.objects.count() == 0


def test_signature_without_prefix_of_the_right_digest_is_refused(client: Client, meta_app: None) -> None:
    body, header = signed(wa_delivery())
    assert post(client, body, header.removeprefix("sha256=")).status_code == 403
    assert WebhookDelivery.objects.count() == 0


def test_signature_with_another_secret_is_refused(client: Client, meta_app: None) -> None:
    body, header = signed(wa_delivery(), secret="someone-elses-secret")
    assert post(client, body, header).status_code == 403
    assert WebhookDelivery.objects.count() == 0


def test_no_app_secret_configured_refuses_everything(client: Client) -> None:
    body = json.dumps(wa_delivery()).encode()
    assert post(client, body, sign(body, "")).status_code == 403
    assert WebhookDelivery.objects.count() == 0


def test_unknown_platform_is_404_and_other_methods_405(client: Client, meta_app: None) -> None:
    body, header = signed(wa_delivery())
    assert post(client, body, header, url="/webhooks/telegram").status_code == 404
    assert client.put(URL, data=body, content_type="application/json").status_code == 405
    assert WebhookDelivery.objects.count() == 0


# --- Per-account app secrets ------------------------------------------------------------------------------------


def test_per_account_secret_verifies_only_its_own_deliveries(client: Client) -> None:
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    account_a = connect(shop_a, waba_id="WABA_A", phone_number_id="111", app_secret="secret-of-shop-a")
    connect(shop_b, waba_id="WABA_B", phone_number_id="222", app_secret="secret-of-shop-b")
    payload = wa_delivery(wa_change("111", messages=[wa_text("hi", wamid="wamid.C")]), waba_id="WABA_A")

    body, header = signed(payload, secret="secret-of-shop-a")
    assert post(client, body, header).status_code == 200
    assert WebhookDelivery.objects.get().verified_accounts == [account_a.pk]

    # Shop B's secret does not verify a delivery for shop A's number.
    body, header = signed(payload, secret="secret-of-shop-b")
    assert post(client, body, header).status_code == 403
    assert WebhookDelivery.objects.count() == 1
