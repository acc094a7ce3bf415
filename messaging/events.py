"""The shapes of what a conversation's sockets get: the events of its Channels group
(``models.conversation_group``), the entries of a reply's resume log (``streams``) and the chat socket's
frames (``consumers``; docs/websocket-protocol.md). The keys are the wire format."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from agents.cards import Card
from agents.models import Theme


class MediaPayload(TypedDict):
    """A photo or voice note a customer's message carried: its kind (image, audio) and the words sent with it."""

    kind: str
    caption: str


class MessagePayload(TypedDict):
    """A message as the protocol sends it (``selectors.message_payload``)."""

    id: int
    conversation_id: int
    role: str
    text: str
    status: str
    client_id: str
    cards: list[Card]
    created_at: str
    stored_ms: NotRequired[float]  # a customer message just stored: the server's time to store it
    rating: NotRequired[str]  # an agent reply the visitor rated: "up" or "down"
    disclosure: NotRequired[str]  # an agent reply that says first it is an automated assistant
    media: NotRequired[list[MediaPayload]]  # a customer's photo or voice note (history, an upload)


class DeltaEntry(TypedDict):
    """A piece of a streamed reply's text, as its resume log keeps it."""

    seq: int
    text: str
    reset: bool  # the reply restarted (another worker took it over): drop its text so far


# --- the group's events: the consumer has one handler per type -----------------------------------------


class MessageCreatedEvent(TypedDict):
    type: Literal["message.created"]
    message: MessagePayload


class ReplyDeltaEvent(DeltaEntry):
    type: Literal["reply.delta"]
    message_id: int
    sent_at: float  # the worker's clock (time.time()), for benchmarks
    created: NotRequired[MessagePayload]  # the reply's message.created, riding on its first delta


class MessageDoneEvent(TypedDict):
    type: Literal["message.done"]
    message_id: int
    text: str
    status: str
    cards: list[Card]


class HandoffEvent(TypedDict):
    type: Literal["conversation.handoff"]
    state: str
    reason: str


class ClosedEvent(TypedDict):
    type: Literal["conversation.closed"]
    conversation_id: int
    csat: bool  # the customer is asked "How did we do?" (widget conversations)


ConversationEvent = MessageCreatedEvent | ReplyDeltaEvent | MessageDoneEvent | HandoffEvent | ClosedEvent


class VisitorMessageEvent(TypedDict):
    """To a visitor's group (``models.visitor_group``): a message of theirs stored outside their sockets (the
    widget's photo upload, ``widget_views.widget_upload``). Each socket joins its conversation if it is not in
    it, then relays it as ``message.created``."""

    type: Literal["visitor.message"]
    message: MessagePayload


# --- client -> server frames -------------------------------------------------------------------------
# As received: nothing in them is checked yet (each field is, where the consumer reads it).


class HelloFrame(TypedDict, total=False):
    type: Literal["hello"]
    visitor_token: object
    conversation_id: object
    last_seq: object
    contact: object
    preview: object  # the admin playground's token (messaging.visitors.playground_token_issue)


class MessageFrame(TypedDict, total=False):
    type: Literal["message"]
    client_id: object
    text: object


class StopFrame(TypedDict, total=False):
    type: Literal["stop"]
    message_id: object


class CsatFrame(TypedDict, total=False):
    type: Literal["csat"]
    conversation_id: object
    score: object


class FeedbackFrame(TypedDict, total=False):
    type: Literal["feedback"]
    message_id: object
    rating: object
    comment: object


# --- server -> client frames -------------------------------------------------------------------------


class AgentInfo(TypedDict):
    name: str
    greeting: str
    theme: Theme


class ReadyFrame(TypedDict):
    type: Literal["ready"]
    visitor_token: str
    conversation_id: int | None
    state: str
    agent: AgentInfo
    history: list[MessagePayload]
    # A conversation closed while the visitor was away: ask "How did we do?" about it now.
    csat_conversation_id: int | None


class DeltaFrame(TypedDict):
    type: Literal["delta"]
    message_id: int
    seq: int
    text: str
    reset: NotRequired[Literal[True]]  # only when true
    sent_at: NotRequired[float]  # only on seq 1


class HandoffFrame(TypedDict):
    type: Literal["handoff"]
    state: str
    reason: str


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    detail: str
    client_id: NotRequired[str]  # when about a ``message`` frame


class PongFrame(TypedDict):
    type: Literal["pong"]


class ClosedFrame(TypedDict):
    type: Literal["closed"]
    conversation_id: int
    csat: bool


class CsatSavedFrame(TypedDict):
    type: Literal["csat.saved"]
    conversation_id: int
    score: int


class FeedbackSavedFrame(TypedDict):
    """The answer to a ``feedback`` frame: the rating now stored on the reply."""

    type: Literal["feedback.saved"]
    message_id: int
    rating: str


# ``message.created`` and ``message.done`` go to the socket as the group's events are.
ServerFrame = (
    ReadyFrame
    | MessageCreatedEvent
    | DeltaFrame
    | MessageDoneEvent
    | HandoffFrame
    | ErrorFrame
    | PongFrame
    | FeedbackSavedFrame
    | ClosedFrame
    | CsatSavedFrame
)
