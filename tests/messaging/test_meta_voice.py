"""Voice notes customers send on WhatsApp, Messenger and Instagram (docs/channels.md, "Photos and voice notes"):
stored as a message being read, downloaded through the Graph stand-in, transcribed by the pool's speech-to-text
endpoint (a second test inference server, ``kind=audio``) and answered; a polite reply without such an endpoint
or when the recording is refused; and a burst with media answered once, after every part is ready."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from inference.endpoints import parse_pool
from inference.models import InferenceCall
from messaging.media import REFUSED_REPLIES, UNREAD_REPLIES, audio_type
from messaging.media_reading import media_read, media_sweep
from messaging.meta import intake
from messaging.meta.parser import parse
from messaging.meta.tasks import process_delivery
from messaging.models import Message, MessageMedia
from messaging.replies.engine import run_reply
from tests.factories import BusinessFactory
from tests.fixtures.inference import AUDIO_MODEL
from tests.fixtures.media import OGG, token_of
from tests.fixtures.meta import connect, page_delivery, page_event, signed, wa_change, wa_delivery, wa_text
from tests.inference_server import InferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_ID = "106540352242922"
M4A = b"\x00\x00\x00\x20ftypM4A " + bytes(300)  # Messenger's and Instagram's voice messages
QUESTION = "How much is the Ridgeline 2-person tent?"


def wa_voice(wamid: str, media_id: str, timestamp: int | None = None) -> dict[str, Any]:
    return {
        "from": "16505551234",
        "id": wamid,
        "timestamp": str(timestamp or int(time.time())),
        "type": "audio",
        "audio": {"id": media_id, "mime_type": "audio/ogg; codecs=opus", "sha256": "x", "voice": True},
    }


def store(payload: Any, platform: str = "whatsapp") -> dict[str, Any] | None:
    """Process a signed delivery (its media are queued for reading, not read)."""
    body, header = signed(json.dumps(payload).encode())
    delivery_id = intake.webhook_delivery_store(platform=platform, body=body, signature=header)
    assert delivery_id is not None
    return process_delivery(delivery_id)


def read_pending() -> list[str | None]:
    """Run the read_media tasks the deliveries queued."""
    pending = MessageMedia.objects.filter(state="pending").order_by("pk")
    return [media_read(media_id=pk) for pk in pending.values_list("pk", flat=True)]


@pytest.fixture
def transcriber() -> Any:
    server = InferenceServer().start()
    server.transcript = QUESTION
    yield server
    server.stop()


@pytest.fixture
def shop(media_shop: Any) -> Any:
    return media_shop


def test_a_voice_note_is_transcribed_and_answered_from_the_catalog(
    shop: Any,
    graph_api: Any,
    inference_server: Any,
    transcriber: Any,
    llama_pool: Any,
    catalog_media: Path,
) -> None:
    llama_pool(inference_server, audio=transcriber)
    inference_server.script("The Ridgeline 2-person tent costs 249.00 EUR.")
    graph_api.add_media("VOICE_1", OGG, token=token_of(shop), mime="audio/ogg")

    assert store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")]))) == {"voice": 1}
    customer = Message.objects.get(role="customer")
    # Nothing slow in the webhook's processing: stored as being read, nothing downloaded yet.
    assert (customer.text, customer.status) == ("[audio]", "preparing")
    assert graph_api.downloads == []
    assert async_to_sync(run_reply)(customer.pk) == "answered"  # not claimable while being read

    assert read_pending() == ["read"]
    # The download went through Graph with the account's token; the transcription is OpenAI's multipart form.
    assert [(d.path, d.headers["Authorization"]) for d in graph_api.downloads] == [
        ("/_media/VOICE_1", f"Bearer {token_of(shop)}")
    ]
    assert transcriber.transcriptions == [(AUDIO_MODEL, "audio.ogg", "audio/ogg", OGG)]
    assert inference_server.chat_requests == 0  # the chat endpoint never gets audio
    customer.refresh_from_db()
    assert (customer.text, customer.status) == (QUESTION, "received")
    media = MessageMedia.objects.get()
    assert (media.kind, media.state, media.content_type, media.size, media.description) == (
        "audio",
        "read",
        "audio/ogg",
        len(OGG),
        QUESTION,
    )
    assert media.file.name.startswith(f"messages/{shop.pk}/") and media.file.read() == OGG
    call = InferenceCall.objects.get(kind="audio")
    assert (call.business_id, call.outcome, call.model, call.endpoint) == (
        shop.pk,
        "ok",
        AUDIO_MODEL,
        transcriber.url,
    )

    assert async_to_sync(run_reply)(customer.pk) == "done"
    reply = Message.objects.get(reply_to=customer)
    assert "249.00 EUR" in reply.text
    assert "TENT-2P" in [card["external_id"] for card in reply.cards]
    # Redelivered: nothing stored, nothing downloaded again; read again: nothing to do.
    assert store(
        wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")]), waba_id="x")
    ) == {"duplicate": 1}
    assert media_read(media_id=media.pk) is None
    assert len(graph_api.downloads) == 1 and len(transcriber.transcriptions) == 1


def test_messenger_and_instagram_voice_messages_come_from_the_attachment_url(
    graph_api: Any,
    inference_server: Any,
    transcriber: Any,
    llama_pool: Any,
    catalog_media: Path,
    settings: Any,
) -> None:
    settings.SAFE_FETCH_ALLOW_PRIVATE = True  # the stand-in's "CDN" is on loopback
    llama_pool(inference_server, audio=transcriber)
    for kind, platform in (("messenger", "page"), ("instagram", "instagram")):
        shop = BusinessFactory()
        connect(shop, kind)
        graph_api.add_media(f"CDN_{kind}", M4A, mime="audio/mp4")
        attachment = [{"type": "audio", "payload": {"url": graph_api.cdn_url(f"CDN_{kind}")}}]
        event = page_event("PAGE_1", "PSID_1", mid=f"m_voice_{kind}", attachments=attachment)
        account_id = "PAGE_1" if kind == "messenger" else shop.channel_accounts.get().instagram_account_id
        event["recipient"]["id"] = account_id
        assert store(page_delivery(platform, [(account_id, [event])]), platform=kind) == {"voice": 1}
        assert read_pending() == ["read"]
        assert Message.objects.get(business=shop, role="customer").text == QUESTION
        assert transcriber.transcriptions[-1][1:3] == ("audio.m4a", "audio/mp4")
    assert all(
        "Authorization" not in d.headers for d in graph_api.downloads
    )  # no token to a URL a webhook gave


def test_without_a_speech_to_text_endpoint_the_customer_is_asked_to_type(
    shop: Any, graph_api: Any, pool_server: Any, catalog_media: Path
) -> None:
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("Hallo, haben Sie Zelte?", wamid="w.1")])))
    Message.objects.filter(channel_message_id="w.1").update(status="answered")
    graph_api.add_media("VOICE_1", OGG, token=token_of(shop), mime="audio/ogg")
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")])))
    assert read_pending() == ["unread"]
    customer = Message.objects.get(channel_message_id="wamid.V1")
    assert (customer.text, customer.status) == ("[audio]", "answered")
    note = Message.objects.get(reply_to=customer)
    # In the language of the customer's words so far; queued to be sent on WhatsApp.
    assert (note.text, note.role, note.delivery) == (UNREAD_REPLIES["audio"]["de"], "agent", "queued")
    media = MessageMedia.objects.get()
    assert (media.state, media.error) == ("unread", "no endpoint transcribes voice notes (kind=audio)")
    assert media.file.read() == OGG  # kept for staff
    assert pool_server.chat_requests == 0
    # A second voice note: the first stands as "[audio]", which holds no words; the German ones still count.
    graph_api.add_media("VOICE_2", OGG, token=token_of(shop), mime="audio/ogg")
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V2", "VOICE_2")])))
    assert read_pending() == ["unread"]
    second = Message.objects.get(reply_to__channel_message_id="wamid.V2")
    assert second.text == UNREAD_REPLIES["audio"]["de"]


def test_a_failing_transcriber_is_tried_then_the_customer_is_asked_to_type(
    shop: Any, graph_api: Any, inference_server: Any, transcriber: Any, llama_pool: Any, catalog_media: Path
) -> None:
    llama_pool(inference_server, audio=transcriber, LLAMA_MAX_TRIES=2)
    transcriber.fault("status", status=500)
    graph_api.add_media("VOICE_1", OGG, token=token_of(shop), mime="audio/ogg")
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")])))
    assert read_pending() == ["unread"]
    assert Message.objects.get(role="agent").text == UNREAD_REPLIES["audio"]["en"]
    call = InferenceCall.objects.get(kind="audio")
    assert (call.outcome, call.tries) == ("unavailable", 2)
    assert transcriber.transcriptions == []


@pytest.mark.parametrize(("data", "mime"), [(OGG * 10, "audio/ogg"), (b"#!AMR\n" + bytes(100), "audio/amr")])
def test_a_recording_too_large_or_of_another_type_is_refused_politely(
    shop: Any,
    graph_api: Any,
    inference_server: Any,
    transcriber: Any,
    llama_pool: Any,
    catalog_media: Path,
    settings: Any,
    data: bytes,
    mime: str,
) -> None:
    llama_pool(inference_server, audio=transcriber)
    settings.MESSAGE_AUDIO_MAX_BYTES = 4096
    graph_api.add_media("VOICE_X", data, token=token_of(shop), mime=mime)
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.X", "VOICE_X")])))
    assert read_pending() == ["refused"]
    assert Message.objects.get(role="agent").text == REFUSED_REPLIES["audio"]["en"].format(mb="0.00390625")
    media = MessageMedia.objects.get()
    assert (media.state, media.file.name) == ("refused", "")
    assert transcriber.transcriptions == []
    assert not (catalog_media / "messages").exists()


def test_a_burst_with_media_is_answered_once_after_every_part_is_ready(
    shop: Any,
    graph_api: Any,
    inference_server: Any,
    transcriber: Any,
    llama_pool: Any,
    catalog_media: Path,
) -> None:
    """A text, a voice note and another text in one burst: the texts' replies wait for the voice note, and
    the one reply answers all three."""
    llama_pool(inference_server, audio=transcriber)
    inference_server.script("The Ridgeline 2-person tent costs 249.00 EUR.")
    transcriber.transcript = "the two person one"
    graph_api.add_media("VOICE_1", OGG, token=token_of(shop), mime="audio/ogg")
    now = int(time.time())  # one second: the delivery's order stands
    store(
        wa_delivery(
            wa_change(
                PHONE_ID,
                messages=[
                    wa_text("Hi, I'm looking for a tent", wamid="w.1", timestamp=now),
                    wa_voice("wamid.V1", "VOICE_1", timestamp=now),
                    wa_text("how much is it?", wamid="w.3", timestamp=now),
                ],
            )
        )
    )
    first, voice, last = Message.objects.filter(role="customer").order_by("pk")
    # The newest text's task finds a message being read: it waits (the reading queues the reply).
    assert async_to_sync(run_reply)(last.pk) == "waiting"
    assert async_to_sync(run_reply)(first.pk) == "answered"  # a burst: the newest answers
    assert not Message.objects.filter(role="agent").exists()

    assert read_pending() == ["read"]
    voice.refresh_from_db()
    assert (voice.text, voice.status) == ("the two person one", "received")
    assert async_to_sync(run_reply)(voice.pk) == "answered"  # not the newest
    assert async_to_sync(run_reply)(last.pk) == "done"
    (reply,) = Message.objects.filter(role="agent")
    assert reply.reply_to_id == last.pk
    assert set(Message.objects.filter(role="customer").values_list("status", flat=True)) == {"answered"}
    # The model was asked all three parts of the burst.
    question = inference_server.requests[-1].body["messages"][-1]["content"]
    for part in ("looking for a tent", "the two person one", "how much is it?"):
        assert part in question


def test_the_sweeper_reads_lost_media_again_and_gives_up_after_ten_minutes(
    shop: Any, graph_api: Any, pool_server: Any, catalog_media: Path
) -> None:
    graph_api.add_media("VOICE_1", OGG, token=token_of(shop), mime="audio/ogg")
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")])))
    store(wa_delivery(wa_change(PHONE_ID, messages=[wa_text("and a stove?", wamid="w.2")])))
    media = MessageMedia.objects.get()
    assert media_sweep() == (0, 0)  # just came: its task is on its way
    assert media_sweep(now=timezone.now() + dt.timedelta(minutes=1)) == (1, 0)
    # A worker died holding it: taken over once its claim is stale.
    MessageMedia.objects.filter(pk=media.pk).update(claimed_at=timezone.now())
    assert media_read(media_id=media.pk) is None
    assert media_sweep(now=timezone.now() + dt.timedelta(minutes=1)) == (0, 0)
    assert media_sweep(now=timezone.now() + dt.timedelta(minutes=6)) == (1, 0)
    # Never read within ten minutes: settled as unread, the customer asked to type, the waiting text answered.
    assert media_sweep(now=timezone.now() + dt.timedelta(minutes=11)) == (0, 1)
    media.refresh_from_db()
    assert (media.state, media.error) == ("unread", "not read in time")
    voice = Message.objects.get(channel_message_id="wamid.V1")
    assert voice.status == "answered"
    assert Message.objects.get(reply_to=voice).text == UNREAD_REPLIES["audio"]["en"]
    text = Message.objects.get(channel_message_id="w.2")
    assert async_to_sync(run_reply)(text.pk) == "done"


def test_tenant_isolation_a_voice_note_of_a_is_never_read_for_b(
    graph_api: Any, inference_server: Any, transcriber: Any, llama_pool: Any, catalog_media: Path
) -> None:
    llama_pool(inference_server, audio=transcriber)
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    connect(shop_a, phone_number_id="111", waba_id="WABA_A")
    connect(shop_b, phone_number_id="222", waba_id="WABA_B")
    graph_api.add_media("VOICE_A", OGG, token=token_of(shop_a), mime="audio/ogg")
    store(wa_delivery(wa_change("111", messages=[wa_voice("wamid.A", "VOICE_A")]), waba_id="WABA_A"))
    # B's number names A's media id: Graph refuses B's token; nothing of A's reaches B.
    store(wa_delivery(wa_change("222", messages=[wa_voice("wamid.B", "VOICE_A")]), waba_id="WABA_B"))
    assert sorted(read_pending(), key=str) == ["read", "refused"]
    assert MessageMedia.objects.get(business=shop_a).state == "read"
    refused = MessageMedia.objects.get(business=shop_b)
    assert (refused.state, refused.file.name, refused.description) == ("refused", "", "")
    assert Message.objects.get(business=shop_b, role="customer").text == "[audio]"
    assert len(transcriber.transcriptions) == 1
    assert InferenceCall.objects.get(kind="audio").business_id == shop_a.pk


def test_voice_messages_are_parsed_on_every_platform() -> None:
    delivery = wa_delivery(wa_change(PHONE_ID, messages=[wa_voice("wamid.V1", "VOICE_1")]))
    (message,) = parse(delivery, platform="whatsapp").messages
    assert (message.kind, message.media_kind, message.media_id, message.supported) == (
        "audio",
        "audio",
        "VOICE_1",
        True,
    )
    attachment = [{"type": "audio", "payload": {"url": "https://cdn.example/v.mp4"}}]
    event = page_event("PAGE_1", "PSID_1", mid="m_1", attachments=attachment)
    (message,) = parse(page_delivery("page", [("PAGE_1", [event])]), platform="messenger").messages
    assert (message.media_kind, message.media_url, message.supported) == (
        "audio",
        "https://cdn.example/v.mp4",
        True,
    )


def test_audio_types_are_read_from_the_bytes() -> None:
    assert audio_type(OGG) == "audio/ogg"
    assert audio_type(M4A) == "audio/mp4"
    assert audio_type(b"ID3\x04" + bytes(20)) == "audio/mpeg"
    assert audio_type(b"\xff\xfb\x90" + bytes(20)) == "audio/mpeg"
    assert audio_type(b"\xff\xf1\x50" + bytes(20)) == "audio/aac"
    assert audio_type(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert audio_type(b"#!AMR\n") is None
    assert audio_type(b"\xff\xd8\xff") is None  # a JPEG is no recording


def test_speech_to_text_endpoints_serve_audio_only() -> None:
    (chat, stt) = parse_pool("http://a:8000,http://b:8000;kind=audio;model=whisper-large-v3")
    assert (stt.kind, stt.model) == ("audio", "whisper-large-v3")
    assert stt.serves("audio") and not stt.serves("chat") and not stt.serves("embeddings")
    assert not chat.serves("audio") and chat.serves("chat")
    with pytest.raises(ImproperlyConfigured, match="kind one of"):
        parse_pool("http://a:8000;kind=speech")
