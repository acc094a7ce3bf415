"""Photos customers send on WhatsApp, Messenger and Instagram (docs/channels.md, "Photos and voice notes"):
stored as a message being read, then (the reading task) downloaded through the Graph stand-in within size and
type limits, described by a pool endpoint that accepts images (the test inference server) and answered as the
question they show; asked to be described when no endpoint can see them; refused politely (no file kept) when
too large or not an image; kept per business and purged after retention."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from inference.chat import complete_chat
from inference.endpoints import parse_pool
from inference.types import ChatRequest, PoolUnavailable
from messaging.media import REFUSED_REPLIES, UNREAD_REPLIES, media_purge
from messaging.media_reading import media_read
from messaging.meta import intake
from messaging.meta.tasks import process_delivery
from messaging.models import Message, MessageMedia
from messaging.replies.engine import run_reply
from tests.factories import BusinessFactory
from tests.fixtures.media import JPEG, token_of
from tests.fixtures.meta import connect, page_delivery, page_event, signed, wa_change, wa_delivery, wa_text

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_ID = "106540352242922"
GIF = b"GIF89a" + bytes(200)
TENT = "A green two-person dome tent with two doors."


def wa_image(wamid: str, media_id: str, caption: str = "") -> dict[str, Any]:
    image = {"id": media_id, "mime_type": "image/jpeg", "sha256": "x"}
    if caption:
        image["caption"] = caption
    return {
        "from": "16505551234",
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "image",
        "image": image,
    }


def deliver(payload: Any, platform: str = "whatsapp") -> dict[str, Any] | None:
    """Process a signed delivery, then read the media it brought (the read_media tasks it queued)."""
    body, header = signed(json.dumps(payload).encode())
    delivery_id = intake.webhook_delivery_store(platform=platform, body=body, signature=header)
    assert delivery_id is not None
    summary = process_delivery(delivery_id)
    for media_id in MessageMedia.objects.filter(state="pending").values_list("pk", flat=True):
        media_read(media_id=media_id)
    return summary


@pytest.fixture
def shop(media_shop: Any) -> Any:
    return media_shop


def test_a_photo_is_downloaded_described_and_answered_with_cited_items(
    shop: Any, graph_api: Any, inference_server: Any, llama_pool: Any, catalog_media: Path
) -> None:
    llama_pool(inference_server, images=True)
    inference_server.image_reply = TENT
    inference_server.script("The Ridgeline 2-person tent costs 249.00 EUR.")
    graph_api.add_media("MEDIA_1", JPEG, token=token_of(shop))

    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_image("wamid.P1", "MEDIA_1")]))) == {
        "photo": 1
    }

    # Graph's media node, then its URL, both with the account's token.
    assert [r.path for r in graph_api.gets() if "MEDIA_1" in r.path] == [
        f"/{graph_api.url.rsplit('/', 1)[1]}/MEDIA_1"
    ]
    (download,) = graph_api.downloads
    assert (download.path, download.headers["Authorization"]) == (
        "/_media/MEDIA_1",
        f"Bearer {token_of(shop)}",
    )
    # The vision call: an OpenAI-style image_url content part carrying the photo.
    assert inference_server.image_requests == 1
    parts = inference_server.requests[-1].body["messages"][-1]["content"]
    assert parts[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()},
    }
    customer = Message.objects.get(role="customer")
    assert customer.text == f"Do you have this? My photo shows: {TENT}"
    media = MessageMedia.objects.get()
    assert (media.business_id, media.message_id, media.content_type, media.size, media.description) == (
        shop.pk,
        customer.pk,
        "image/jpeg",
        len(JPEG),
        TENT,
    )
    assert media.file.name.startswith(f"messages/{shop.pk}/")
    assert media.file.read() == JPEG

    assert async_to_sync(run_reply)(customer.pk) == "done"
    reply = Message.objects.get(reply_to=customer)
    assert "TENT-2P" in [card["external_id"] for card in reply.cards]
    assert "249.00 EUR" in reply.text
    # Redelivered: not downloaded again, nothing new stored.
    assert deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[wa_image("wamid.P1", "MEDIA_1")]), waba_id="other")
    ) == {"duplicate": 1}
    assert len(graph_api.downloads) == 1 and MessageMedia.objects.count() == 1


def test_messenger_and_instagram_photos_come_from_the_attachment_url(
    graph_api: Any, inference_server: Any, llama_pool: Any, catalog_media: Path, settings: Any
) -> None:
    settings.SAFE_FETCH_ALLOW_PRIVATE = True  # the stand-in's "CDN" is on loopback
    llama_pool(inference_server, images=True)
    inference_server.image_reply = TENT
    shop = BusinessFactory()
    connect(shop, "messenger")
    graph_api.add_media("CDN_1", JPEG)
    attachment = [{"type": "image", "payload": {"url": graph_api.cdn_url("CDN_1")}}]
    event = page_event("PAGE_1", "PSID_1", mid="m_photo", attachments=attachment, text="in blue?")
    assert deliver(page_delivery("page", [("PAGE_1", [event])]), platform="messenger") == {"photo": 1}
    assert Message.objects.get(role="customer").text == f"in blue?\n(My photo shows: {TENT})"
    assert MessageMedia.objects.get().file.read() == JPEG
    assert [d.path for d in graph_api.downloads] == ["/_cdn/CDN_1"]
    assert "Authorization" not in graph_api.downloads[0].headers  # no token to a URL a webhook gave


def test_without_an_image_endpoint_the_customer_is_asked_to_describe_the_photo(
    shop: Any, graph_api: Any, pool_server: Any, catalog_media: Path
) -> None:
    graph_api.add_media("MEDIA_1", JPEG, token=token_of(shop))
    graph_api.add_media("MEDIA_2", JPEG, token=token_of(shop))
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_image("wamid.P1", "MEDIA_1")]))) == {
        "photo": 1
    }
    assert pool_server.chat_requests == 0
    customer, note = Message.objects.order_by("pk")
    assert (customer.text, customer.status) == ("[image]", "answered")
    assert (note.text, note.reply_to_id, note.delivery) == (
        UNREAD_REPLIES["image"]["en"],
        customer.pk,
        "queued",
    )
    media = MessageMedia.objects.get()
    assert (media.message_id, media.state) == (customer.pk, "unread")  # kept for staff to see
    assert media.file.read() == JPEG
    # In the customer's language when their words tell it.
    deliver(
        wa_delivery(wa_change(PHONE_ID, messages=[wa_text("Haben Sie Zelte für den Winter?", wamid="w.2")]))
    )
    deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_image("wamid.P2", "MEDIA_2")])))
    note_de = Message.objects.get(role="agent", reply_to__channel_message_id="wamid.P2")
    assert note_de.text == UNREAD_REPLIES["image"]["de"]
    # A caption is a question the agent can answer without seeing the photo.
    graph_api.add_media("MEDIA_3", JPEG, token=token_of(shop))
    captioned = wa_image("wamid.P3", "MEDIA_3", caption="Do you have this tent?")
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[captioned]))) == {"photo": 1}
    assert Message.objects.get(channel_message_id="wamid.P3").text == "Do you have this tent?"
    assert pool_server.chat_requests == 0


@pytest.mark.parametrize(("data", "mime"), [(JPEG * 10, "image/jpeg"), (GIF, "image/gif")])
def test_a_photo_too_large_or_not_an_image_is_refused_politely_and_not_kept(
    shop: Any, graph_api: Any, pool_server: Any, catalog_media: Path, settings: Any, data: bytes, mime: str
) -> None:
    settings.MESSAGE_MEDIA_MAX_BYTES = 4096
    graph_api.add_media("MEDIA_X", data, token=token_of(shop), mime=mime)
    message = wa_image("wamid.X", "MEDIA_X")
    assert deliver(wa_delivery(wa_change(PHONE_ID, messages=[message]))) == {"photo": 1}
    note = Message.objects.get(role="agent")
    assert note.text == REFUSED_REPLIES["image"]["en"].format(mb="0.00390625")
    media = MessageMedia.objects.get()
    assert (media.state, media.file.name, media.size) == ("refused", "", 0)
    assert not (catalog_media / "messages").exists()
    assert pool_server.chat_requests == 0
    # Too large by Graph's own count: not even downloaded.
    assert len(graph_api.downloads) == (0 if len(data) > 4096 else 1)


def test_a_messenger_photo_over_the_limit_is_cut_off_and_refused(
    graph_api: Any, pool_server: Any, catalog_media: Path, settings: Any
) -> None:
    settings.SAFE_FETCH_ALLOW_PRIVATE = True
    settings.MESSAGE_MEDIA_MAX_BYTES = 4096
    shop = BusinessFactory()
    connect(shop, "messenger")
    graph_api.add_media("CDN_BIG", JPEG * 10)
    attachment = [{"type": "image", "payload": {"url": graph_api.cdn_url("CDN_BIG")}}]
    event = page_event("PAGE_1", "PSID_1", mid="m_big", attachments=attachment)
    assert deliver(page_delivery("page", [("PAGE_1", [event])]), platform="messenger") == {"photo": 1}
    assert MessageMedia.objects.get().state == "refused"


def test_tenant_isolation_media_of_a_is_never_reachable_by_b(
    graph_api: Any, inference_server: Any, llama_pool: Any, catalog_media: Path
) -> None:
    llama_pool(inference_server, images=True)
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    connect(shop_a, phone_number_id="111", waba_id="WABA_A")
    connect(shop_b, phone_number_id="222", waba_id="WABA_B")
    graph_api.add_media("MEDIA_A", JPEG, token=token_of(shop_a))
    assert deliver(
        wa_delivery(wa_change("111", messages=[wa_image("wamid.A", "MEDIA_A")]), waba_id="WABA_A")
    ) == {"photo": 1}
    # B's number names A's media id: Graph refuses B's token, nothing of A's reaches B.
    assert deliver(
        wa_delivery(wa_change("222", messages=[wa_image("wamid.B", "MEDIA_A")]), waba_id="WABA_B")
    ) == {"photo": 1}
    media = MessageMedia.objects.get(business=shop_a)
    assert media.message.business_id == shop_a.pk
    assert media.file.name.startswith(f"messages/{shop_a.pk}/")
    refused = MessageMedia.objects.get(business=shop_b)
    assert (refused.state, refused.file.name) == ("refused", "")
    assert Message.objects.get(business=shop_b, role="customer").text == "[image]"
    assert [d.headers["Authorization"] for d in graph_api.downloads] == [f"Bearer {token_of(shop_a)}"]


def test_photos_are_purged_after_the_retention(
    shop: Any, graph_api: Any, pool_server: Any, catalog_media: Path, settings: Any
) -> None:
    settings.MESSAGE_MEDIA_RETENTION_DAYS = 30
    for n in (1, 2):
        graph_api.add_media(f"MEDIA_{n}", JPEG, token=token_of(shop))
        deliver(wa_delivery(wa_change(PHONE_ID, messages=[wa_image(f"wamid.P{n}", f"MEDIA_{n}", "tent?")])))
    old, recent = MessageMedia.objects.order_by("pk")
    MessageMedia.objects.filter(pk=old.pk).update(
        description="d", created_at=timezone.now() - dt.timedelta(days=31)
    )
    old_path = Path(old.file.path)
    assert media_purge() == 1
    assert not old_path.exists() and Path(recent.file.path).exists()
    old.refresh_from_db()
    assert (old.file.name, old.description, old.size) == ("", "d", len(JPEG))
    assert media_purge() == 0


def test_images_flag_of_pool_endpoints(inference_server: Any, llama_pool: Any) -> None:
    (plain, vision) = parse_pool("http://a:8000,http://b:8000/v1;images=yes")
    assert (plain.accepts_images, vision.accepts_images) == (False, True)
    assert vision.serves("chat", images=True) and not plain.serves("chat", images=True)
    with pytest.raises(ImproperlyConfigured, match="images is yes or no"):
        parse_pool("http://a:8000;images=maybe")
    llama_pool(inference_server)
    request = ChatRequest(business_id=1, messages=[{"role": "user", "content": "hi"}], images=True)
    with pytest.raises(PoolUnavailable, match="accepts images"):
        async_to_sync(complete_chat)(request)
    assert inference_server.chat_requests == 0
