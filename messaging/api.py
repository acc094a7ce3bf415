"""REST API v1 of conversations, messages, contacts and channel accounts (docs/api.md).

Conversations, their messages and contacts are the customers' words and identities: every operation on
them needs the ``conversations`` scope. Channel accounts are read with ``read`` and never show a token or
a secret. Every action goes through the services the inbox uses (``messaging.services``): a staff message
reaches the customer on the conversation's channel, a handoff silences the agent until it is handed back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Field, Query, Schema, Status

from businesses.api_auth import CONVERSATIONS, READ, api_business
from common.idempotency import IdempotentRouter
from common.pagination import cursor_paginated
from common.problems import Problem
from messaging import selectors
from messaging.meta.selectors import ChannelAccountSummary, channel_account_summary, channel_accounts_list
from messaging.models import Channel, Contact, Conversation, Message, MessageMedia
from messaging.services import (
    conversation_close,
    conversation_hand_back,
    conversation_handoff,
    staff_reply_send,
)

router = IdempotentRouter(tags=["conversations"])


class ContactOut(Schema):
    id: int
    channel: str
    external_id: str = Field(description="The visitor id, WhatsApp number or Meta user id on that channel")
    name: str
    email: str
    phone: str
    reference: str = Field(description="The site's own id for the visitor (BizAgent.identify)")
    created_at: datetime


class ConversationOut(Schema):
    id: int
    channel: str
    state: Conversation.State = Field(description="bot: the agent answers; human: staff do; closed")
    handoff_reason: str
    contact: ContactOut
    last_customer_message_at: datetime | None
    closed_at: datetime | None
    csat_score: int | None = Field(description="The customer's 1-5 answer to 'How did we do?'")
    created_at: datetime
    updated_at: datetime


class MediaOut(Schema):
    """A photo or voice note the customer sent (its file is not served through the API)."""

    kind: str = Field(description="image or audio")
    state: str = Field(
        description="pending (being read), read, unread (kept, not read) or refused (not kept)"
    )
    content_type: str = Field(description="The type read from the file's bytes; empty until downloaded")
    size: int = Field(description="Bytes; 0 until downloaded")
    description: str = Field(description="What the agent read in it: a photo's description, a transcript")


class MessageOut(Schema):
    id: int
    conversation_id: int
    role: str = Field(description="customer, agent or staff")
    text: str
    status: str
    delivery: str = Field(description="On WhatsApp, Messenger, Instagram: queued, sent, delivered, read...")
    cards: list[dict[str, Any]]
    citations: list[dict[str, Any]]
    rating: str
    media: list[MediaOut] = Field(
        description="A customer's photo or voice note, and what the agent read in it"
    )
    created_at: datetime

    @staticmethod
    def resolve_media(message: Message) -> list[MessageMedia]:
        return list(message.media.all())


class ConversationFilters(Schema):
    state: Conversation.State | None = None
    channel: Channel | None = None


class ContactFilters(Schema):
    channel: Channel | None = None


class StaffMessageIn(Schema):
    text: str = Field(min_length=1, max_length=4000)


class HandoffIn(Schema):
    reason: str = Field("taken over through the API", max_length=200)


def _conversation(request: HttpRequest, conversation_id: int, *, open_only: bool = False) -> Conversation:
    conversation = selectors.conversation_of(api_business(request), conversation_id)
    if conversation is None:
        raise Http404
    if open_only and conversation.state == Conversation.State.CLOSED:
        raise Problem(
            409, "the conversation is closed: the customer's next message opens a new one", code="closed"
        )
    return conversation


@router.get(
    "/conversations", response=list[ConversationOut], auth=CONVERSATIONS, summary="List conversations"
)
@cursor_paginated
def conversations_list(request: HttpRequest, filters: Query[ConversationFilters]) -> Any:
    return selectors.conversations_list(
        api_business(request),
        state=filters.state.value if filters.state else None,
        channel=filters.channel.value if filters.channel else None,
    )


@router.get(
    "/conversations/{int:conversation_id}",
    response=ConversationOut,
    auth=CONVERSATIONS,
    summary="Get a conversation",
)
def conversation_get(request: HttpRequest, conversation_id: int) -> Conversation:
    return _conversation(request, conversation_id)


@router.get(
    "/conversations/{int:conversation_id}/messages",
    response=list[MessageOut],
    auth=CONVERSATIONS,
    summary="A conversation's messages, oldest first",
)
@cursor_paginated
def conversation_messages(request: HttpRequest, conversation_id: int) -> Any:
    conversation = _conversation(request, conversation_id)
    return selectors.conversation_messages(api_business(request), conversation.pk)


@router.post(
    "/conversations/{int:conversation_id}/messages",
    response={201: MessageOut},
    auth=CONVERSATIONS,
    summary="Send a staff message to the customer (the agent then stays silent)",
)
def staff_message_post(
    request: HttpRequest, conversation_id: int, payload: StaffMessageIn
) -> Status[Message]:
    conversation = _conversation(request, conversation_id, open_only=True)
    text = payload.text.strip()
    if not text:
        raise Problem(
            422,
            "the message is empty",
            code="validation_failed",
            errors=[{"field": "body.text", "message": "write something to send"}],
        )
    message = staff_reply_send(
        business=api_business(request), conversation_id=conversation.pk, user=None, text=text
    )
    if message is None:
        raise Http404
    return Status(201, message)


@router.post(
    "/conversations/{int:conversation_id}/handoff",
    response=ConversationOut,
    auth=CONVERSATIONS,
    summary="Hand the conversation to staff (the agent stays silent)",
)
def conversation_handoff_post(request: HttpRequest, conversation_id: int, payload: HandoffIn) -> Conversation:
    conversation = _conversation(request, conversation_id, open_only=True)
    updated = conversation_handoff(
        business=api_business(request), conversation_id=conversation.pk, reason=payload.reason
    )
    if updated is None:
        raise Http404
    return updated


@router.post(
    "/conversations/{int:conversation_id}/hand-back",
    response=ConversationOut,
    auth=CONVERSATIONS,
    summary="Hand the conversation back to the agent",
)
def conversation_hand_back_post(request: HttpRequest, conversation_id: int) -> Conversation:
    conversation = _conversation(request, conversation_id, open_only=True)
    updated = conversation_hand_back(business=api_business(request), conversation_id=conversation.pk)
    if updated is None:
        raise Http404
    return updated


@router.post(
    "/conversations/{int:conversation_id}/close",
    response=ConversationOut,
    auth=CONVERSATIONS,
    summary="Close the conversation (a widget customer is asked how it went)",
)
def conversation_close_post(request: HttpRequest, conversation_id: int) -> Conversation:
    conversation = _conversation(request, conversation_id)
    closed = conversation_close(business=api_business(request), conversation_id=conversation.pk)
    if closed is None:
        raise Http404
    return _conversation(request, closed.pk)


@router.get("/contacts", response=list[ContactOut], auth=CONVERSATIONS, summary="List contacts")
@cursor_paginated
def contacts_list(request: HttpRequest, filters: Query[ContactFilters]) -> Any:
    return selectors.contacts_list(
        api_business(request), channel=filters.channel.value if filters.channel else None
    )


@router.get("/contacts/{int:contact_id}", response=ContactOut, auth=CONVERSATIONS, summary="Get a contact")
def contact_get(request: HttpRequest, contact_id: int) -> Contact:
    contact = selectors.contact_of(api_business(request), contact_id)
    if contact is None:
        raise Http404
    return contact


class ChannelAccountOut(Schema):
    """A connected WhatsApp, Messenger or Instagram account: its ids, never its token or secrets."""

    id: int
    kind: str
    name: str
    routing_id: str
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    page_id: str
    instagram_account_id: str
    template_name: str
    template_language: str
    last_delivery_at: datetime | None
    webhook_url: str


@router.get(
    "/channel-accounts",
    response=list[ChannelAccountOut],
    auth=READ,
    tags=["channels"],
    summary="List connected channel accounts",
)
def channel_accounts(request: HttpRequest) -> list[ChannelAccountSummary]:
    return channel_accounts_list(api_business(request))


@router.get(
    "/channel-accounts/{int:account_id}",
    response=ChannelAccountOut,
    auth=READ,
    tags=["channels"],
    summary="Get a channel account",
)
def channel_account_get(request: HttpRequest, account_id: int) -> ChannelAccountSummary:
    summary = channel_account_summary(api_business(request), account_id)
    if summary is None:
        raise Http404
    return summary
