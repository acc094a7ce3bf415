"""The ``data`` of each event type, as receivers get it (docs/webhooks.md, "Events"). Ids are the rows'
ids, times ISO 8601 in UTC."""

from __future__ import annotations

from typing import Literal, TypedDict


class ConversationData(TypedDict):
    """conversation.created, conversation.closed."""

    conversation_id: int
    channel: str
    contact_id: int
    state: str


class MessageData(TypedDict):
    """message.created: a customer's message, the agent's finished reply or a staff reply."""

    conversation_id: int
    message_id: int
    channel: str
    role: str
    text: str
    status: str
    created_at: str


class HandoffData(TypedDict):
    """handoff.requested: the agent stays silent until staff hand the conversation back."""

    conversation_id: int
    channel: str
    reason: str


class FeedbackData(TypedDict):
    """feedback.received: a thumbs up or down on a reply (``rating``), or a 1 to 5 score of a closed
    conversation (``csat``)."""

    conversation_id: int
    kind: Literal["rating", "csat"]
    message_id: int | None
    rating: str | None
    score: int | None
    comment: str


class ImportData(TypedDict):
    """import.finished: succeeded (bad rows are counted in ``failed``) or failed (nothing changed)."""

    import_id: int
    state: str
    mode: str
    original_filename: str
    created: int
    updated: int
    unchanged: int
    retired: int
    failed: int
    error: str


class TestData(TypedDict):
    """webhook.test, sent on the owner's request to one endpoint."""

    endpoint_id: int
    message: str


EventData = ConversationData | MessageData | HandoffData | FeedbackData | ImportData | TestData
