"""The chat websocket (``/ws/chat/<widget key>/``), protocol in docs/websocket-protocol.md.

The consumer stores messages through services (which queue the reply task) and relays the conversation
group's events. It generates nothing: the reply is the Celery task's. The one thing it starts besides
storing, by design (docs/architecture.md, "Layers"), is the question's embedding when embeddings come from
the pool (``query_vectors.hand_over_soon``): that call then runs during the queue hop instead of after it, on
the process's background loop, so it never holds this socket's event loop. ORM work sits in plain helpers
run through ``common.aio.database``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents.selectors import agent_for
from businesses.models import Business
from businesses.selectors import business_for_widget_key, origin_allowed
from common import aio, tracing
from common.text import holds_nul
from messaging import query_vectors, ratelimits, selectors, services, streams
from messaging.events import (
    AgentInfo,
    ClosedEvent,
    CsatFrame,
    DeltaEntry,
    DeltaFrame,
    ErrorFrame,
    FeedbackFrame,
    HandoffEvent,
    HelloFrame,
    MessageCreatedEvent,
    MessageDoneEvent,
    MessageFrame,
    MessagePayload,
    ReplyDeltaEvent,
    ServerFrame,
    StopFrame,
    VisitorMessageEvent,
)
from messaging.models import (
    RATING_COMMENT_MAX_CHARS,
    Channel,
    Conversation,
    Message,
    conversation_group,
    visitor_group,
)
from messaging.visitors import playground_token_valid, visitor_from_token, visitor_token_issue

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429


def _business(widget_key: str) -> Business | None:
    return business_for_widget_key(widget_key)


@dataclass(frozen=True)
class ReadyState:
    agent: AgentInfo
    conversation: Conversation | None
    history: list[MessagePayload] = field(default_factory=list)
    streaming: list[int] = field(default_factory=list)
    csat_conversation_id: int | None = None


def _ready_state(
    business: Business, visitor_id: str, conversation_id: int | None, preview: bool, new_visitor: bool
) -> ReadyState:
    agent = agent_for(business)
    if preview:
        agent = agent.with_draft()  # the playground greets as the draft would
    agent_info: AgentInfo = {"name": agent.name, "greeting": agent.greeting, "theme": agent.theme()}
    if new_visitor:
        return ReadyState(agent_info, None)  # a visitor issued just now has no conversation to read
    conversation = selectors.visitor_conversation(business, visitor_id, conversation_id)
    if conversation is None:
        closed = selectors.csat_unasked(business, visitor_id, services.CSAT_ASK_WITHIN)
        if closed is not None and services.conversation_csat_asked(business=business, conversation_id=closed):
            return ReadyState(agent_info, None, csat_conversation_id=closed)
        return ReadyState(agent_info, None)
    history, streaming = _history(business, conversation.pk, visitor_id)
    return ReadyState(agent_info, conversation, history, streaming)


def _history(
    business: Business, conversation_id: int, visitor_id: str
) -> tuple[list[MessagePayload], list[int]]:
    """The visitor's conversation as ``ready`` sends it, and the ids of its replies still streaming."""
    streaming = [m.pk for m in selectors.streaming_replies(business, conversation_id)]
    history = []
    for message in selectors.conversation_history(business, conversation_id, visitor_id):
        payload = selectors.message_payload(message, message.media.all())
        if message.pk in streaming:
            payload["text"] = ""  # a reply still streaming: its text follows as deltas (from the log)
        history.append(payload)
    return history, streaming


def _open_conversation(business: Business, visitor_id: str, preview: bool) -> Conversation:
    return services.conversation_open(
        business=business, channel=Channel.WIDGET, contact_external_id=visitor_id, preview=preview
    )


def _receive(
    business: Business,
    visitor_id: str,
    text: str,
    client_id: str,
    conversation_id: int | None,
    query_vector_token: str | None,
    preview: bool,
) -> Message | None:
    return services.message_receive(
        business=business,
        channel=Channel.WIDGET,
        contact_external_id=visitor_id,
        text=text,
        client_message_id=client_id,
        conversation_id=conversation_id,
        query_vector_token=query_vector_token,
        preview=preview,
    )


def _stored(business: Business, conversation_id: int, client_id: str) -> Message | None:
    return Message.objects.filter(
        business=business, conversation_id=conversation_id, client_message_id=client_id
    ).first()


def _rate(business: Business, visitor_id: str, message_id: int, rating: str, comment: str) -> Message | None:
    return services.message_rate(
        business=business, visitor_id=visitor_id, message_id=message_id, rating=rating, comment=comment
    )


def _csat(business: Business, visitor_id: str, conversation_id: int, score: int) -> Conversation | None:
    return services.conversation_csat(
        business=business, visitor_id=visitor_id, conversation_id=conversation_id, score=score
    )


def _streaming_reply(business: Business, conversation_id: int, message_id: int | None) -> int | None:
    replies = selectors.streaming_replies(business, conversation_id)
    if message_id is not None:
        replies = [m for m in replies if m.pk == message_id]
    return replies[-1].pk if replies else None


class ChatConsumer(AsyncJsonWebsocketConsumer):
    business: Business | None = None
    visitor_id: str | None = None
    conversation_id: int | None = None
    group: str | None = None
    # The visitor's group (all its sockets), joined at hello: told of a photo uploaded over HTTP.
    visitor_group: str | None = None
    # The admin's playground (a valid playground token in hello): its conversations answer with the draft.
    preview: bool = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch first sweeps the database connections in a thread, for every event: every
        # streamed delta would pay a thread hop. Database calls here go through aio.database instead.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.sent_seq: dict[int, int] = {}
        self.registered = False
        self.address_registered = False
        # Per-address limits (docs/security.md, "Chat socket"): the peer, or the trusted proxy's header.
        self.address = ratelimits.client_address(self.scope)
        key = self.scope["url_route"]["kwargs"]["widget_key"]
        self.business = await aio.database(_business, key)
        await self.accept()
        if self.business is None:
            await self.error("unknown_widget", "No business has this widget key.")
            await self.close(CLOSE_NOT_FOUND)
            return
        headers = dict(self.scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1")
        # The business's own list, whatever ALLOWED_HOSTS says: any page could open a websocket otherwise.
        if not origin_allowed(self.business, origin):
            self.business = None
            await self.error("origin_not_allowed", f"Origin {origin or '(none)'} may not open this chat.")
            await self.close(CLOSE_FORBIDDEN)
            return
        if not await ratelimits.address_connection_open(self.business.pk, self.address, self.channel_name):
            self.business = None
            await self.error(
                "too_many_address_connections", "Too many chat windows are open from your network."
            )
            await self.close(CLOSE_TOO_MANY)
            return
        self.address_registered = True

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.visitor_group:
            await self.channel_layer.group_discard(self.visitor_group, self.channel_name)
        if self.registered and self.business is not None and self.visitor_id:
            await ratelimits.connection_close(self.business.pk, self.visitor_id, self.channel_name)
        if self.address_registered and self.business is not None:
            await ratelimits.address_connection_close(self.business.pk, self.address, self.channel_name)

    async def send_frame(self, frame: ServerFrame) -> None:
        await self.send_json(frame)

    async def error(self, code: str, detail: str, *, client_id: str | None = None) -> None:
        frame: ErrorFrame = {"type": "error", "code": code, "detail": detail}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send_frame(frame)

    # --- client frames ----------------------------------------------------------------------------------

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.business is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if holds_nul(content):
            await self.error("bad_frame", "Frames may not contain NUL characters (\\u0000).")
        elif kind == "hello":
            await self.on_hello(content)
        elif self.visitor_id is None:
            await self.error("hello_required", "Send hello first.")
        elif kind == "message":
            await self.on_message(content)
        elif kind == "stop":
            await self.on_stop(content)
        elif kind == "feedback":
            await self.on_feedback(content)
        elif kind == "csat":
            await self.on_csat(content)
        elif kind == "ping":
            await self.send_frame({"type": "pong"})
        else:
            await self.error("bad_frame", f"Unknown frame type {kind!r}.")

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        limit = settings.CHAT_MAX_MESSAGE_CHARS * 4 + 1024
        if text_data is None or len(text_data) > limit:
            await self.error("too_large", f"Frames are JSON text of at most {limit} characters.")
            return
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except ValueError:
            await self.error("bad_frame", "Frames are JSON objects.")

    async def on_hello(self, content: HelloFrame) -> None:
        assert self.business is not None
        if self.visitor_id is not None:
            await self.error("bad_frame", "hello was already sent.")
            return
        new_visitor = False
        given = content.get("visitor_token")
        token = given if isinstance(given, str) else ""
        visitor_id = visitor_from_token(self.business.pk, token)
        if visitor_id is None:
            # Every visitor gets its own message limit: minting them is what an address is limited in.
            if not await ratelimits.new_visitor_allowed(self.business.pk, self.address):
                await self.error(
                    "too_many_new_visitors", "Too many new chats from your network; try again in a minute."
                )
                await self.close(CLOSE_TOO_MANY)
                return
            token, visitor_id = visitor_token_issue(self.business.pk)
            new_visitor = True
        if not await ratelimits.connection_open(self.business.pk, visitor_id, self.channel_name):
            await self.error("too_many_connections", "This visitor has too many chat windows open.")
            await self.close(CLOSE_TOO_MANY)
            return
        self.registered = True
        self.visitor_id = visitor_id
        # Before the conversation is read: a photo uploaded from now on is told to this socket too, one
        # uploaded before is in what is read.
        self.visitor_group = visitor_group(self.business.pk, visitor_id)
        await self.channel_layer.group_add(self.visitor_group, self.channel_name)
        self.preview = playground_token_valid(self.business.pk, content.get("preview"))
        details = content.get("contact")
        if isinstance(details, dict) and details:
            await aio.database(
                services.contact_identify, business=self.business, visitor_id=visitor_id, details=details
            )
        wanted = content.get("conversation_id")
        wanted_id = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else None
        ready = await aio.database(
            _ready_state, self.business, visitor_id, wanted_id, self.preview, new_visitor
        )
        if wanted_id is not None and ready.conversation is None:
            # Not this visitor's (or gone): say so, and fall back to the visitor's own latest conversation.
            await self.error("conversation_not_found", "That conversation does not exist for this visitor.")
            ready = await aio.database(
                _ready_state, self.business, visitor_id, None, self.preview, new_visitor
            )
        conversation = ready.conversation
        if conversation is not None:
            await self.join(conversation.pk)
        given_seq = content.get("last_seq")
        last_seq: dict[str, object] = given_seq if isinstance(given_seq, dict) else {}
        await self.send_frame(
            {
                "type": "ready",
                "visitor_token": token,
                "conversation_id": conversation.pk if conversation else None,
                "state": conversation.state if conversation else Conversation.State.BOT,
                "agent": ready.agent,
                "history": ready.history,
                "csat_conversation_id": ready.csat_conversation_id,
            }
        )
        await self.resume(ready.streaming, last_seq)

    async def resume(self, streaming: list[int], last_seq: dict[str, object]) -> None:
        """Send the replies still streaming from their logs, past the ``seq`` the client has of each. Joined
        the group first, so live deltas queue behind this; the log fills the gap before them and ``sent_seq``
        drops the ones the log already gave."""
        for message_id in streaming:
            seen = last_seq.get(str(message_id), 0)
            seen = seen if isinstance(seen, int) else 0
            self.sent_seq[message_id] = seen
            for entry in await streams.log_read(message_id, seen):
                await self.send_delta(message_id, entry)

    async def join(self, conversation_id: int) -> None:
        if self.conversation_id == conversation_id:
            return
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.conversation_id = conversation_id
        self.group = conversation_group(conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def on_message(self, content: MessageFrame) -> None:
        assert self.business is not None and self.visitor_id is not None
        client_id = content.get("client_id")
        text = content.get("text")
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
            await self.error("bad_frame", "client_id must be a string of 1 to 64 characters.")
            return
        if not isinstance(text, str) or not text.strip():
            await self.error("empty_message", "The message has no text.", client_id=client_id)
            return
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            await self.error(
                "too_long",
                f"Messages are at most {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
                client_id=client_id,
            )
            return
        refused = await ratelimits.message_allowed(self.business.pk, self.visitor_id, self.address)
        if refused:
            await self.error(refused, ratelimits.REFUSALS[refused], client_id=client_id)
            return
        started = time.perf_counter()
        if self.conversation_id is None:
            conversation = await aio.database(
                _open_conversation, self.business, self.visitor_id, self.preview
            )
            await self.join(conversation.pk)
        token = query_vectors.new_token()
        # The trace of the reply starts here: the task queued on commit carries it (common.tasks).
        with tracing.span("chat.message", business_id=self.business.pk, text_chars=len(text)):
            message = await aio.database(
                _receive,
                self.business,
                self.visitor_id,
                text.strip(),
                client_id,
                self.conversation_id,
                token,
                self.preview,
            )
        if message is None:
            # A resend (the socket dropped before the ack): answer with the stored one, store nothing.
            assert self.conversation_id is not None
            stored = await aio.database(_stored, self.business, self.conversation_id, client_id)
            if stored is not None:
                await self.send_frame(
                    {"type": "message.created", "message": selectors.message_payload(stored)}
                )
            return
        if token and message.status == Message.Status.RECEIVED:
            # Its reply is queued: the question's vector is fetched while the task is on its way.
            query_vectors.hand_over_soon(token, message.text)
        if message.conversation_id != self.conversation_id:
            await self.join(message.conversation_id)
        payload = selectors.message_payload(message)
        payload["stored_ms"] = round((time.perf_counter() - started) * 1000, 2)
        # To the group: the visitor's other tabs see it too (this socket gets it from the group as well).
        created: MessageCreatedEvent = {"type": "message.created", "message": payload}
        await self.channel_layer.group_send(self.group, created)

    async def on_stop(self, content: StopFrame) -> None:
        assert self.business is not None
        if self.conversation_id is None:
            return
        wanted = content.get("message_id")
        message_id = await aio.database(
            _streaming_reply, self.business, self.conversation_id, wanted if isinstance(wanted, int) else None
        )
        if message_id is not None:
            await streams.cancel_request(message_id)

    async def on_feedback(self, content: FeedbackFrame) -> None:
        assert self.business is not None and self.visitor_id is not None
        message_id = content.get("message_id")
        rating = content.get("rating")
        comment = content.get("comment", "")
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            await self.error("bad_frame", "feedback needs the message_id of an agent reply.")
            return
        if rating not in ("up", "down"):
            await self.error("bad_rating", "rating must be 'up' or 'down'.")
            return
        if comment is None:
            comment = ""
        if not isinstance(comment, str) or len(comment) > RATING_COMMENT_MAX_CHARS:
            await self.error(
                "bad_rating", f"comment must be text of at most {RATING_COMMENT_MAX_CHARS} characters."
            )
            return
        if not await ratelimits.feedback_allowed(self.business.pk, self.visitor_id):
            await self.error("feedback_rate_limited", "Too many ratings; wait a minute.")
            return
        rated = await aio.database(_rate, self.business, self.visitor_id, message_id, rating, comment)
        if rated is None:
            # Not a finished agent reply of this visitor's (another conversation, another business, a
            # customer message, one still streaming): nothing stored.
            await self.error("message_not_found", "No finished reply of yours has that id.")
            return
        await self.send_frame({"type": "feedback.saved", "message_id": rated.pk, "rating": rated.rating})

    async def on_csat(self, content: CsatFrame) -> None:
        assert self.business is not None and self.visitor_id is not None
        conversation_id = content.get("conversation_id")
        score = content.get("score")
        if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
            await self.error("bad_frame", "csat needs the conversation_id of a closed conversation.")
            return
        if not isinstance(score, int) or isinstance(score, bool) or score not in services.CSAT_SCORES:
            await self.error("bad_rating", "score must be a whole number from 1 to 5.")
            return
        if not await ratelimits.feedback_allowed(self.business.pk, self.visitor_id):
            await self.error("feedback_rate_limited", "Too many ratings; wait a minute.")
            return
        rated = await aio.database(_csat, self.business, self.visitor_id, conversation_id, score)
        if rated is None or rated.csat_score is None:
            await self.error("csat_not_found", "No closed conversation of yours has that id.")
            return
        await self.send_frame({"type": "csat.saved", "conversation_id": rated.pk, "score": rated.csat_score})

    # --- group events ------------------------------------------------------------------------------------

    async def send_delta(self, message_id: int, entry: DeltaEntry, sent_at: float | None = None) -> None:
        """``sent_at``: the worker's clock, sent on seq 1 (a live delta has it, the log does not keep it)."""
        seq = int(entry["seq"])
        if seq <= self.sent_seq.get(message_id, 0):
            return  # already sent (from the log, or a duplicate): never repeat
        self.sent_seq[message_id] = seq
        frame: DeltaFrame = {"type": "delta", "message_id": message_id, "seq": seq, "text": entry["text"]}
        if entry.get("reset"):
            frame["reset"] = True
        if sent_at is not None and seq == 1:
            frame["sent_at"] = sent_at
        await self.send_frame(frame)

    async def reply_delta(self, event: ReplyDeltaEvent) -> None:
        message_id = int(event["message_id"])
        # A reply's first delta carries its message.created: sent with that delta, never after it (a resumed
        # socket may have had the delta from the log already, and an empty upsert would wipe its text).
        if "created" in event and int(event["seq"]) > self.sent_seq.get(message_id, 0):
            await self.send_frame({"type": "message.created", "message": event["created"]})
        await self.send_delta(message_id, event, event.get("sent_at"))

    async def message_created(self, event: MessageCreatedEvent) -> None:
        await self.send_frame({"type": "message.created", "message": event["message"]})

    async def visitor_message(self, event: VisitorMessageEvent) -> None:
        """A message of this visitor's stored outside its sockets (a photo uploaded over HTTP): relayed, and
        when it opened a conversation this socket is not in (the visitor's first action was the upload), the
        socket joins it, then catches up on what its group carried before the join (a reply started, a note
        sent) the way a reconnect does."""
        assert self.business is not None and self.visitor_id is not None
        message = event["message"]
        conversation_id = message["conversation_id"]
        joined = self.conversation_id == conversation_id
        if not joined:
            await self.join(conversation_id)
        await self.send_frame({"type": "message.created", "message": message})
        if joined:
            return
        history, streaming = await aio.database(_history, self.business, conversation_id, self.visitor_id)
        for payload in history:
            if payload["id"] > message["id"]:
                await self.send_frame({"type": "message.created", "message": payload})
        await self.resume(streaming, {})

    async def message_done(self, event: MessageDoneEvent) -> None:
        await self.send_frame(
            {
                "type": "message.done",
                "message_id": event["message_id"],
                "text": event["text"],
                "status": event["status"],
                "cards": event["cards"],
            }
        )

    async def conversation_closed(self, event: ClosedEvent) -> None:
        if event["csat"] and self.business is not None:
            # Asked now: the visitor's next visit does not ask again.
            await aio.database(
                services.conversation_csat_asked,
                business=self.business,
                conversation_id=event["conversation_id"],
            )
        await self.send_frame(
            {"type": "closed", "conversation_id": event["conversation_id"], "csat": event["csat"]}
        )

    async def conversation_handoff(self, event: HandoffEvent) -> None:
        await self.send_frame({"type": "handoff", "state": event["state"], "reason": event.get("reason", "")})
