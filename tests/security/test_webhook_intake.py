"""Webhook intake (docs/security.md, "Webhook intake"): refused cheaply before any parsing or database work,
per-account secrets cached in process memory, replays acknowledged but stored once, processed bodies purged
after the retention period with the row's metadata kept.

Real HTTP: a uvicorn started as the stack starts it, and the ASGI application in process (httpx's ASGI
transport) where a test counts what the intake did."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from common import aio
from config.asgi import application
from messaging.meta import accounts, intake
from messaging.meta import selectors as meta_selectors
from messaging.meta.tasks import purge_webhook_bodies
from messaging.models import Message, WebhookDelivery
from tests.factories import BusinessFactory
from tests.fixtures.meta import APP_SECRET, connect, signed, wa_change, wa_delivery, wa_text
from tests.fixtures.stack import AsgiServer, start_asgi

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("graph_api")]

URL = "/webhooks/whatsapp"
PHONE = "106540352242922"


@pytest.fixture(autouse=True)
def _close_webhook_connections() -> Iterator[None]:
    meta_selectors.signing_keys_forget()
    yield
    meta_selectors.signing_keys_forget()
    aio.close_database_connections()


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str], stack_logs: Path) -> Iterator[AsgiServer]:
    env = {**stack_env, "META_APP_SECRET": APP_SECRET, "WEBHOOK_MAX_BODY_BYTES": str(64 * 1024)}
    asgi = start_asgi(env, stack_logs / "asgi-webhooks.log")
    yield asgi
    asgi.stop()


def post(server: AsgiServer, body: bytes, header: str | None, path: str = URL) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    return httpx.post(server.url + path, content=body, headers=headers, timeout=10)


def delivery(text: str = "Do you have the tent in green?", wamid: str = "wamid.R1") -> dict[str, Any]:
    return wa_delivery(wa_change(PHONE, messages=[wa_text(text, wamid=wamid)]))


def process_all() -> None:
    for pk in WebhookDelivery.objects.filter(state="pending").values_list("pk", flat=True):
        intake.webhook_delivery_process(delivery_id=pk)


# --- Replays -------------------------------------------------------------------------------------------------


def test_a_replayed_delivery_is_acknowledged_but_stored_and_processed_once(server: AsgiServer) -> None:
    connect(BusinessFactory())
    body, header = signed(delivery())
    first = post(server, body, header)
    again = post(server, body, header)
    assert (first.status_code, first.text, again.status_code, again.text) == (
        200,
        "EVENT_RECEIVED",
        200,
        "EVENT_RECEIVED",
    )
    assert WebhookDelivery.objects.count() == 1
    process_all()
    # Days later (Meta retries for up to 7 days): still acknowledged, still not stored.
    assert post(server, body, header).status_code == 200
    assert WebhookDelivery.objects.count() == 1
    assert WebhookDelivery.objects.get().state == WebhookDelivery.State.DONE
    assert Message.objects.count() == 1


def test_the_same_events_in_other_bytes_are_another_delivery_deduplicated_by_message_id(
    server: AsgiServer,
) -> None:
    """Decided: the digest is of the raw bytes. Other whitespace is another body (it needs its own valid
    signature, so it came from Meta or a holder of the secret); it is stored, and its messages are
    de-duplicated by their ids when processed."""
    connect(BusinessFactory())
    payload = delivery()
    compact, compact_header = signed(json.dumps(payload, separators=(",", ":")).encode())
    spaced, spaced_header = signed(json.dumps(payload, indent=2).encode())
    assert post(server, compact, compact_header).status_code == 200
    assert post(server, spaced, spaced_header).status_code == 200
    assert WebhookDelivery.objects.count() == 2
    process_all()
    assert Message.objects.filter(role="customer").count() == 1


def test_the_same_bytes_on_another_endpoint_are_another_delivery(server: AsgiServer) -> None:
    body, header = signed(delivery())
    assert post(server, body, header).status_code == 200
    assert post(server, body, header, path="/webhooks/meta").status_code == 200
    assert sorted(WebhookDelivery.objects.values_list("platform", flat=True)) == ["meta", "whatsapp"]


def test_a_tenant_secret_cannot_pre_empt_another_tenants_delivery(server: AsgiServer) -> None:
    """The digest covers who signed: bytes a tenant signs with its own secret (which only ever reach its
    own accounts) never make the deployment-signed delivery of the same bytes look like a replay."""
    victim = BusinessFactory()
    connect(victim)
    connect(BusinessFactory(), waba_id="WABA_X", phone_number_id="999", app_secret="tenant-x-own-secret")
    body = json.dumps(delivery()).encode()
    _, tenant_header = signed(body, secret="tenant-x-own-secret")
    # Not for the tenant's own number: refused outright.
    assert post(server, body, tenant_header).status_code == 403
    _, header = signed(body)
    assert post(server, body, header).status_code == 200
    process_all()
    assert Message.objects.filter(business=victim).count() == 1


# --- Refused cheaply -------------------------------------------------------------------------------------------


def test_an_oversized_body_is_refused_before_it_is_read(server: AsgiServer) -> None:
    body, header = signed(delivery("x" * (80 * 1024)))
    response = post(server, body, header)
    assert (response.status_code, response.text) == (413, "payload too large")
    assert WebhookDelivery.objects.count() == 0


async def test_a_forged_delivery_is_refused_without_parsing_or_database_work(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgiref.sync import sync_to_async

    settings.META_APP_SECRET = APP_SECRET
    business = await sync_to_async(BusinessFactory)()
    # Two tenants with their own Meta app: a forged delivery must be tried against their secrets too.
    await sync_to_async(connect)(business, waba_id="W1", phone_number_id="111", app_secret="own-secret-one")
    await sync_to_async(connect)(business, waba_id="W2", phone_number_id="222", app_secret="own-secret-two")
    parsed: list[bytes] = []
    loads: list[int] = []
    real_loads, real_load = json.loads, meta_selectors.own_app_secrets

    def counting_loads(raw: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(raw)
        return real_loads(raw, *args, **kwargs)

    def counting_load() -> Any:
        loads.append(1)
        return real_load()

    monkeypatch.setattr(intake.json, "loads", counting_loads)
    monkeypatch.setattr(meta_selectors, "own_app_secrets", counting_load)
    body = json.dumps(wa_delivery(wa_change("111", messages=[wa_text("hi", wamid="wamid.F")]), waba_id="W1"))
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        statuses = set()
        for n in range(30):
            forged = "sha256=" + f"{n:064x}"
            response = await client.post(URL, content=body, headers={"X-Hub-Signature-256": forged})
            statuses.add(response.status_code)
        for header in ("", "sha1=" + "0" * 40, "sha256=short", "sha256=" + "z" * 64):
            response = await client.post(URL, content=body, headers={"X-Hub-Signature-256": header})
            statuses.add(response.status_code)
        assert statuses == {403}
        assert parsed == []  # never parsed
        assert loads == [1]  # the tenants' secrets were read (and decrypted) once, then kept in memory
        assert await WebhookDelivery.objects.acount() == 0
        # A tenant's own secret still verifies its own number's deliveries (parsed once verified).
        _, header = signed(body.encode(), secret="own-secret-one")
        response = await client.post(URL, content=body, headers={"X-Hub-Signature-256": header})
        assert response.status_code == 200
        assert loads == [1]
        assert len(parsed) == 1
        stored = await WebhookDelivery.objects.aget()
        assert len(stored.verified_accounts) == 1


async def test_the_secret_cache_expires_and_a_connect_in_this_process_is_seen_at_once(settings: Any) -> None:
    from asgiref.sync import sync_to_async

    settings.WEBHOOK_SECRET_CACHE_SECONDS = 3600
    business = await sync_to_async(BusinessFactory)()
    assert await sync_to_async(meta_selectors.signing_keys_load)() == []
    account = await sync_to_async(connect)(
        business, waba_id="W1", phone_number_id="111", app_secret="own-secret-one"
    )
    keys = meta_selectors.signing_keys_fresh()
    assert keys is None  # forgotten on commit of the connect
    keys = await sync_to_async(meta_selectors.signing_keys_load)()
    assert [(key.secret, [pk for pk, _ in key.accounts]) for key in keys] == [
        ("own-secret-one", [account.pk])
    ]
    await sync_to_async(accounts.channel_account_disconnect)(business=business, account_id=account.pk)
    assert meta_selectors.signing_keys_fresh() is None
    settings.WEBHOOK_SECRET_CACHE_SECONDS = 0
    assert await sync_to_async(meta_selectors.signing_keys_load)() == []
    assert meta_selectors.signing_keys_fresh() is None  # a zero TTL keeps nothing


# --- Retention -------------------------------------------------------------------------------------------------


def test_processed_bodies_are_purged_after_the_retention_period_keeping_the_metadata(
    settings: Any, server: AsgiServer
) -> None:
    settings.WEBHOOK_BODY_RETENTION_DAYS = 7
    shop = BusinessFactory()
    connect(shop)
    old_body, old_header = signed(delivery(wamid="wamid.OLD"))
    new_body, new_header = signed(delivery(wamid="wamid.NEW"))
    pending_body, pending_header = signed(delivery(wamid="wamid.PENDING"))
    for body, header in ((old_body, old_header), (new_body, new_header)):
        assert post(server, body, header).status_code == 200
    process_all()
    assert post(server, pending_body, pending_header).status_code == 200
    old = WebhookDelivery.objects.get(body=old_body)
    eight_days_ago = timezone.now() - dt.timedelta(days=8)
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=eight_days_ago, processed_at=eight_days_ago)
    WebhookDelivery.objects.filter(body=pending_body).update(received_at=eight_days_ago)

    assert purge_webhook_bodies() == 1
    old.refresh_from_db()
    assert bytes(old.body) == b""
    assert old.body_purged_at is not None
    assert (old.platform, old.state, old.summary, old.business_id, old.signature) == (
        "whatsapp",
        WebhookDelivery.State.DONE,
        {"received": 1},
        shop.pk,
        old_header,
    )
    assert old.body_sha256
    # Recent deliveries, and one not processed yet, keep their bodies.
    assert bytes(WebhookDelivery.objects.get(body=new_body).body) == new_body
    assert WebhookDelivery.objects.filter(body=pending_body).count() == 1
    assert purge_webhook_bodies() == 0  # nothing left to purge: safe to run twice
    # The digest outlives the body: a late replay of the purged delivery is still not stored again.
    assert post(server, old_body, old_header).status_code == 200
    assert WebhookDelivery.objects.count() == 3
    assert Message.objects.filter(role="customer").count() == 2


def test_the_purge_runs_from_celery_beat() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-webhook-bodies"]
    assert entry == {
        "task": "messaging.meta.tasks.purge_webhook_bodies",
        "schedule": django_settings.WEBHOOK_PURGE_SECONDS,
    }
    assert django_settings.WEBHOOK_BODY_RETENTION_DAYS == 7
