"""The inbox, the catalog browser and the search preview, through the views (tenant-scoped, exact)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from catalogs.models import Item
from dashboard.views.inbox import TAKEOVER_REASON
from messaging.models import Channel, Contact, Conversation, Message, MessageMedia
from tests.dashboard.conftest import Tenant, make_conversation
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.media import OGG

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _whatsapp_conversation(tenant: Tenant, state: str) -> Conversation:
    business = tenant.business
    contact = Contact.objects.create(
        business=business, channel=Channel.WHATSAPP, external_id="15550001", name="Ana"
    )
    conversation = Conversation.objects.create(
        business=business, contact=contact, channel=Channel.WHATSAPP, state=state
    )
    Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WHATSAPP,
        role="customer",
        text="hola?",
        status="received",
    )
    return conversation


def test_inbox_filters(tenant_a: Tenant, tenant_b: Tenant) -> None:
    waiting = _whatsapp_conversation(tenant_a, Conversation.State.HUMAN)
    bot = Conversation.objects.get(business=tenant_a.business, channel=Channel.WIDGET)
    client = _client(tenant_a.staff)
    base = f"/app/{tenant_a.business.slug}/inbox/"

    def listed(query: str) -> list[int]:
        return [row.conversation.pk for row in client.get(base + query).context["rows"]]

    assert sorted(listed("")) == sorted([waiting.pk, bot.pk])  # never B's conversation
    assert listed("?channel=whatsapp") == [waiting.pk]
    assert listed("?state=bot") == [bot.pk]
    assert listed("?needs_human=on") == [waiting.pk]
    partial = client.get(f"{base}list/?needs_human=on").content.decode()
    assert f'data-conversation="{waiting.pk}"' in partial
    assert "needs reply" in partial
    assert f'data-conversation="{bot.pk}"' not in partial


def test_thread_shows_citations_and_grounding_and_live_updates(
    tenant_a: Tenant, import_catalog: Callable[..., Any]
) -> None:
    import_catalog(tenant_a.business, SMALL_CATALOG_CSV)
    tent = Item.objects.get(business=tenant_a.business, external_id="TENT-2P")
    conversation = make_conversation(tenant_a.business, text="tent price?")
    customer = conversation.messages.get()
    reply = Message.objects.create(
        business=tenant_a.business,
        conversation=conversation,
        channel=conversation.channel,
        role="agent",
        status="done",
        reply_to=customer,
        text="The tent is 99 EUR.",
        disclosure="You're talking to a bot.",
        citations=[
            {
                "kind": "item",
                "item_id": tent.pk,
                "chunk_id": None,
                "external_id": "TENT-2P",
                "title": tent.title,
                "score": 0.8,
            }
        ],
        grounding={
            "ok": False,
            "issues": [
                {"kind": "wrong_price", "text": "99 EUR", "item_id": tent.pk, "expected": "249.00 EUR"}
            ],
        },
    )
    client = _client(tenant_a.staff)
    url = f"/app/{tenant_a.business.slug}/inbox/{conversation.pk}/"
    html = client.get(url).content.decode()
    # The AI disclosure the customer read before the reply.
    assert (
        '<div class="disclosure muted" title="AI disclosure, shown to the customer before the reply">'
        "You&#x27;re talking to a bot.</div>" in html
    )
    assert f"/catalog/items/{tent.pk}/" in html
    assert "wrong price: &quot;99 EUR&quot; (catalog: 249.00 EUR)" in html
    data = client.get(f"{url}messages/?after={customer.pk}").json()
    assert data["state"] == "bot"
    assert [(m["id"], m["final"]) for m in data["messages"]] == [(reply.pk, True)]
    assert "Ridgeline 2-person tent" in data["messages"][0]["html"]
    assert client.get(f"{url}messages/?after={reply.pk}").json()["messages"] == []


def test_take_over_reply_and_hand_back(tenant_a: Tenant) -> None:
    conversation_id = tenant_a.objects["conversation"]
    client = _client(tenant_a.staff)
    url = f"/app/{tenant_a.business.slug}/inbox/{conversation_id}/"
    assert client.post(url + "take-over/").status_code == 302
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.state, conversation.handoff_reason) == ("human", TAKEOVER_REASON)
    assert client.post(url + "reply/", {"text": "  Hello, this is Sam.  "}).status_code == 302
    staff = Message.objects.get(conversation_id=conversation_id, role="staff")
    assert (staff.text, staff.status) == ("Hello, this is Sam.", "done")
    assert client.post(url + "hand-back/").status_code == 302
    conversation.refresh_from_db()
    assert (conversation.state, conversation.handoff_reason) == ("bot", "")
    # The agent's next reply says again that it is an automated assistant (messaging.disclosure).
    assert conversation.disclosed_at is None


def test_items_browser_filters(tenant_a: Tenant, import_catalog: Callable[..., Any]) -> None:
    import_catalog(tenant_a.business, SMALL_CATALOG_CSV)
    client = _client(tenant_a.staff)
    base = f"/app/{tenant_a.business.slug}/catalog/items/"

    def skus(query: str) -> list[str]:
        return [item.external_id for item in client.get(base + query).context["page"]]

    assert skus("") == ["BAG-0C", "STOVE-1", "TENT-2P", "SKU-1"]  # by title; SKU-1 is "Trail boot"
    assert skus("?availability=out_of_stock") == ["BAG-0C"]
    assert skus("?q=stove") == ["STOVE-1"]
    assert skus("?category=tents") == ["TENT-2P"]


def test_search_preview_shows_the_agents_results_with_score_parts(
    tenant_a: Tenant, tenant_b: Tenant, import_catalog: Callable[..., Any]
) -> None:
    import_catalog(tenant_a.business, SMALL_CATALOG_CSV, embed=True)
    import_catalog(tenant_b.business, SMALL_CATALOG_CSV, embed=True)
    response = _client(tenant_a.staff).get(
        f"/app/{tenant_a.business.slug}/catalog/search/?q=a+tent+for+two+people&partial=1"
    )
    hits = response.context["hits"]
    assert hits[0].external_id == "TENT-2P"
    assert {h.item_id for h in hits if h.item_id} <= set(
        Item.objects.filter(business=tenant_a.business).values_list("pk", flat=True)
    )
    assert hits[0].score > 0 and hits[0].vector_score > 0
    html = response.content.decode()
    assert f"{hits[0].score:.3f}" in html
    assert f"{hits[0].vector_score:.3f}" in html


def test_onboarding_steps_tick_themselves_from_data(
    business: Any, import_catalog: Callable[..., Any]
) -> None:
    from agents.services import agent_update
    from businesses.services import business_set_allowed_origins
    from dashboard.selectors import onboarding_steps
    from tests.dashboard.conftest import make_channel_account

    def done() -> list[str]:
        return [s.key for s in onboarding_steps(business, own_origins=["http://127.0.0.1:8000"]) if s.done]

    business_set_allowed_origins(business, origins=["http://127.0.0.1:8000"])  # the playground only
    assert done() == []
    import_catalog(business, SMALL_CATALOG_CSV)
    agent_update(business, instructions="Be brief.")
    conversation = make_conversation(business)
    Message.objects.create(
        business=business, conversation=conversation, channel="widget", role="agent", text="Hi", status="done"
    )
    business_set_allowed_origins(business, origins=["http://127.0.0.1:8000", "https://shop.example"])
    assert done() == ["catalog", "agent", "try", "install"]
    make_channel_account(business)
    assert done() == ["catalog", "agent", "try", "install", "whatsapp"]


def test_the_inbox_shows_what_the_visitor_said_of_itself_escaped(tenant_a: Tenant, tenant_b: Tenant) -> None:
    conversation = make_conversation(tenant_a.business)
    Contact.objects.filter(pk=conversation.contact_id).update(
        name="<b>Ada</b>", email="ada@example.com", phone="+44 20 7946 0000", reference="cust-42"
    )
    html = (
        _client(tenant_a.staff)
        .get(f"/app/{tenant_a.business.slug}/inbox/{conversation.pk}/")
        .content.decode()
    )
    assert '<a href="mailto:ada@example.com">ada@example.com</a>' in html
    assert "+44 20 7946 0000" in html and "ref cust-42" in html
    assert "&lt;b&gt;Ada&lt;/b&gt;" in html and "<b>Ada</b>" not in html
    other = _client(tenant_b.staff).get(f"/app/{tenant_a.business.slug}/inbox/{conversation.pk}/")
    assert other.status_code in (403, 404)


def test_the_inbox_shows_a_customers_photo_and_voice_note_to_members_only(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    photo = MessageMedia.objects.get(pk=tenant_a.objects["message_media"])
    message = photo.message
    voice = MessageMedia(
        business=tenant_a.business, message=message, kind="audio", state="read", description="a stove?"
    )
    voice.content_type, voice.size = "audio/ogg", len(OGG)
    voice.file.save("voice.ogg", ContentFile(OGG), save=False)
    voice.save()
    refused = MessageMedia.objects.create(
        business=tenant_a.business, message=message, kind="image", state="refused", error="not a JPEG"
    )
    staff = _client(tenant_a.staff)
    html = staff.get(f"/app/{tenant_a.business.slug}/inbox/{message.conversation_id}/").content.decode()
    base = f"/app/{tenant_a.business.slug}/inbox/media"
    assert f'<img src="{base}/{photo.pk}/"' in html and "described: a tent" in html
    assert f'<audio controls preload="none" src="{base}/{voice.pk}/">' in html and "transcribed" in html
    assert "refused (not a JPEG)" in html and f"{base}/{refused.pk}/" not in html
    served = staff.get(f"{base}/{voice.pk}/")
    assert (served.status_code, served["Content-Type"], served.content) == (
        200,
        "audio/ogg",
        OGG,
    )
    assert served["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert staff.get(f"{base}/{refused.pk}/").status_code == 404  # nothing kept
    # Another business's member: 404 on the file, under either slug.
    other = _client(tenant_b.staff)
    assert other.get(f"{base}/{photo.pk}/").status_code == 404
    assert other.get(f"/app/{tenant_b.business.slug}/inbox/media/{photo.pk}/").status_code == 404
