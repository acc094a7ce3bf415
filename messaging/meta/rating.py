"""The rating question on WhatsApp, Messenger and Instagram (``Agent.ask_channel_rating``). Pure functions.

When staff close a conversation, the customer is asked once to rate it: WhatsApp reply buttons (at most 3,
titles at most 20 characters), Messenger and Instagram quick replies (at most 13). Each choice carries
``csat:<conversation id>:<score>``; the tap comes back as a button reply or quick-reply payload, and stores that
score on that conversation (``messaging.services.conversation_csat``, only for that contact at that business).
"""

from __future__ import annotations

from typing import Any

WHATSAPP = "whatsapp"
QUESTION = "How did we do? Please rate this conversation."
# What the customer taps and the CSAT score (1 to 5) it stands for: three choices fit WhatsApp's three buttons.
CHOICES = (("Good", 5), ("OK", 3), ("Bad", 1))
PAYLOAD_PREFIX = "csat:"


def payload(conversation_id: int, score: int) -> str:
    return f"{PAYLOAD_PREFIX}{conversation_id}:{score}"


def rating_of(value: str) -> tuple[int, int] | None:
    """The (conversation id, score) a tapped rating choice carries, or None when the payload is not one."""
    if not value.startswith(PAYLOAD_PREFIX):
        return None
    conversation, _, score = value[len(PAYLOAD_PREFIX) :].partition(":")
    if not conversation.isdigit() or not score.isdigit():
        return None
    return int(conversation), int(score)


def rating_content(platform: str, conversation_id: int, text: str) -> dict[str, Any]:
    """The one send that asks: a WhatsApp ``button`` message body (without ``to``), or a Messenger/Instagram
    ``message`` object with quick replies."""
    if platform == WHATSAPP:
        buttons = [
            {"type": "reply", "reply": {"id": payload(conversation_id, score), "title": title}}
            for title, score in CHOICES
        ]
        return {
            "type": "interactive",
            "interactive": {"type": "button", "body": {"text": text}, "action": {"buttons": buttons}},
        }
    return {
        "text": text,
        "quick_replies": [
            {"content_type": "text", "title": title, "payload": payload(conversation_id, score)}
            for title, score in CHOICES
        ],
    }
