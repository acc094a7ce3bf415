"""The rating question on WhatsApp, Messenger and Instagram (``Agent.ask_channel_rating``). Pure functions.

When staff close a conversation, the customer is asked once to rate it: WhatsApp reply buttons (at most 3,
titles at most 20 characters), Messenger and Instagram quick replies (at most 13, titles at most 20). Each
choice carries ``csat:<conversation id>:<score>``; the tap comes back as a button reply or quick-reply payload,
and stores that score on that conversation (``messaging.services.conversation_csat``, only for that contact at
that business).

The question and the choices' titles are in the customer's language (``agents.question.language_of`` of their
words, English when unknown); the payloads are the same in every language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.question import language_of

WHATSAPP = "whatsapp"
# The CSAT score (1 to 5) each choice stands for, in order: three choices fit WhatsApp's three buttons.
SCORES = (5, 3, 1)
PAYLOAD_PREFIX = "csat:"


@dataclass(frozen=True)
class Wording:
    question: str
    choices: tuple[str, str, str]  # the titles of the SCORES' choices, in order (at most 20 characters each)


WORDINGS = {
    "en": Wording("How did we do? Please rate this conversation.", ("Good", "OK", "Bad")),
    "de": Wording(
        "Wie zufrieden waren Sie mit uns? Bitte bewerten Sie dieses Gespräch.", ("Gut", "Geht so", "Schlecht")
    ),
    "fr": Wording(
        "Comment s'est passé notre échange ? Merci de noter cette conversation.", ("Bien", "Moyen", "Mauvais")
    ),
    "es": Wording(
        "¿Qué tal te hemos atendido? Valora esta conversación, por favor.", ("Bien", "Regular", "Mal")
    ),
    "it": Wording(
        "Com'è andata con noi? Per favore, valuta questa conversazione.", ("Bene", "Così così", "Male")
    ),
    "nl": Wording(
        "Hoe tevreden ben je over ons? Geef dit gesprek een beoordeling.", ("Goed", "Gaat wel", "Slecht")
    ),
}


def question(language_hint: str) -> str:
    """The question in the language of ``language_hint`` (the customer's words in the conversation)."""
    return WORDINGS[language_of(language_hint, "en")].question


def _wording(question_text: str) -> Wording:
    """The wording a stored question was asked in (English for any other text)."""
    return next((w for w in WORDINGS.values() if w.question == question_text), WORDINGS["en"])


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
    ``message`` object with quick replies. The choices' titles are in the language of ``text``, the question
    as stored (``question``)."""
    choices = list(zip(_wording(text).choices, SCORES, strict=True))
    if platform == WHATSAPP:
        buttons = [
            {"type": "reply", "reply": {"id": payload(conversation_id, score), "title": title}}
            for title, score in choices
        ]
        return {
            "type": "interactive",
            "interactive": {"type": "button", "body": {"text": text}, "action": {"buttons": buttons}},
        }
    return {
        "text": text,
        "quick_replies": [
            {"content_type": "text", "title": title, "payload": payload(conversation_id, score)}
            for title, score in choices
        ],
    }
