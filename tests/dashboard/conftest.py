"""Fixtures of the admin tests: two businesses with one row of every kind the admin's URLs name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from agents.models import CuratedAnswer
from agents.services import curated_answer_create
from businesses.models import Business, Invitation, Membership
from businesses.services import api_key_issue
from catalogs.models import FeedSource, Import, Item
from messaging.meta.accounts import channel_account_connect
from messaging.models import Channel, ChannelAccount, Contact, Conversation, Message, MessageMedia
from regressions.models import RegressionRun
from tests.factories import BusinessFactory, MembershipFactory, UserFactory
from tests.fixtures.media import JPEG
from tests.fixtures.meta import grant
from webhooks.services import endpoint_create


def make_conversation(
    business: Business, *, state: str = Conversation.State.BOT, text: str = "hello"
) -> Conversation:
    contact = Contact.objects.create(
        business=business, channel=Channel.WIDGET, external_id=f"v-{Contact.objects.count()}"
    )
    conversation = Conversation.objects.create(
        business=business, contact=contact, channel=Channel.WIDGET, state=state
    )
    Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.CUSTOMER,
        text=text,
        status=Message.Status.RECEIVED,
    )
    return conversation


def make_feed(business: Business, *, url: str = "https://shop.example/feed.csv") -> FeedSource:
    return FeedSource.objects.create(business=business, url=url, next_run_at=timezone.now())


def make_item(business: Business, *, external_id: str = "SKU-1", title: str = "Trail boot") -> Item:
    return Item.objects.create(
        business=business, external_id=external_id, title=title, price="89.00", currency="EUR"
    )


def make_import(business: Business) -> Import:
    return Import.objects.create(
        business=business,
        file=SimpleUploadedFile("feed.csv", b"id,title\n1,x\n"),
        original_filename="feed.csv",
        state=Import.State.SUCCEEDED,
        phase=Import.Phase.DONE,
        rows_total=2,
        rows_done=2,
        created_count=1,
        failed_count=1,
        error_report=[{"row": 3, "column": "price", "reason": "not a price: 'abc'"}],
    )


@pytest.fixture(autouse=True)
def _graph_stand_in(graph_api: Any) -> Any:
    """Connecting a channel asks Meta first: every dashboard test talks to a loopback Graph stand-in."""
    return graph_api


def make_channel_account(business: Business) -> ChannelAccount:
    fields = {
        "access_token": "EAAG-test-token-0123456789",
        "waba_id": f"WABA_{business.pk}",
        "phone_number_id": str(100000 + business.pk),
    }
    grant("whatsapp", **fields)  # the service asks Meta (the Graph stand-in) before it connects
    return channel_account_connect(
        business=business, kind="whatsapp", verify_token="verify-token-of-the-test-0001", **fields
    )


def make_invitation(business: Business, *, email: str = "invitee@example.com") -> Invitation:
    return Invitation.objects.create(
        business=business,
        email=email,
        role=Membership.Role.STAFF,
        expires_at=timezone.now() + timedelta(days=7),
    )


def make_curated_answer(business: Business, *, question: str = "Do you ship abroad?") -> CuratedAnswer:
    return curated_answer_create(business=business, question=question, answer="Yes, to all of Europe.")


def make_agent_reply(business: Business) -> Message:
    # In the tenant's conversation (the "conversation" row): the pages' tests count one per tenant.
    conversation = Conversation.objects.filter(business=business).first() or make_conversation(business)
    asked = Message.objects.filter(conversation=conversation).first()
    return Message.objects.create(
        business=business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.AGENT,
        status=Message.Status.DONE,
        text="We are open every day.",
        reply_to=asked,
    )


def make_message_media(business: Business) -> MessageMedia:
    """A photo on the tenant's first message (the pages' tests count one conversation per tenant)."""
    message = Message.objects.filter(business=business).order_by("pk").first() or make_agent_reply(business)
    media = MessageMedia(business=business, message=message, kind="image", state="read", description="a tent")
    media.content_type, media.size = "image/jpeg", len(JPEG)
    media.file.save("photo.jpg", ContentFile(JPEG), save=False)
    media.save()
    return media


def make_regression_run(business: Business) -> RegressionRun:
    return RegressionRun.objects.create(
        business=business, trigger=RegressionRun.Trigger.MANUAL, state=RegressionRun.State.SUCCEEDED
    )


# Kind of row named by a URL keyword argument (see dashboard.permissions.member_view) -> how to make one.
OBJECT_MAKERS: dict[str, Callable[[Business], int]] = {
    "api_key": lambda b: api_key_issue(b, name="ci").api_key.pk,
    "import": lambda b: make_import(b).pk,
    "item": lambda b: make_item(b).pk,
    "feed": lambda b: make_feed(b).pk,
    "conversation": lambda b: make_conversation(b).pk,
    "message": lambda b: make_agent_reply(b).pk,
    "message_media": lambda b: make_message_media(b).pk,
    "channel_account": lambda b: make_channel_account(b).pk,
    "invitation": lambda b: make_invitation(b).pk,
    "curated_answer": lambda b: make_curated_answer(b).pk,
    "regression_run": lambda b: make_regression_run(b).pk,
    "webhook_endpoint": lambda b: (
        endpoint_create(business=b, url="http://127.0.0.1:9/hooks", events=["message.created"]).pk
    ),
}


@dataclass
class Tenant:
    business: Business
    owner: User
    staff: User
    objects: dict[str, int]


def _tenant() -> Tenant:
    owner_membership = MembershipFactory(role=Membership.Role.OWNER)
    business = owner_membership.business
    staff = UserFactory()
    MembershipFactory(business=business, user=staff, role=Membership.Role.STAFF)
    return Tenant(
        business=business,
        owner=owner_membership.user,
        staff=staff,
        objects={kind: make(business) for kind, make in OBJECT_MAKERS.items()},
    )


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    return _tenant()


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    return _tenant()


@pytest.fixture
def business() -> Business:
    return BusinessFactory()
