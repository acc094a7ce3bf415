"""When an agent's reply starts with the AI disclosure (what it says: ``agents.disclosure``).

A reply carries it (``Message.disclosure``, shown before its text on every channel) when the customer has not
been told in this stretch of the conversation: its first reply (``Conversation.disclosed_at`` is None), the
first after staff hand the conversation back (``services.conversation_hand_back`` clears it), and the first
after a gap of ``AI_DISCLOSURE_GAP_HOURS`` between the customer's question and the message before it. Asking
for a person works at any time (``agents.prompts.handoff_reason``), whatever the disclosure says.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings

from agents.disclosure import disclosure_text
from agents.models import Agent
from agents.selectors import agent_for
from messaging.models import Conversation, Message


def disclosure_due(
    *, disclosed_at: dt.datetime | None, previous_at: dt.datetime | None, question_at: dt.datetime
) -> bool:
    """Whether the reply to a question asked at ``question_at`` starts with the disclosure; ``previous_at``:
    when the conversation's message before the question was written (None: there is none)."""
    if disclosed_at is None:
        return True
    gap = dt.timedelta(hours=settings.AI_DISCLOSURE_GAP_HOURS)
    return previous_at is not None and question_at - previous_at >= gap


def reply_disclosure(
    *,
    agent: Agent,
    question: str,
    disclosed_at: dt.datetime | None,
    previous_at: dt.datetime | None,
    question_at: dt.datetime,
) -> str:
    """The disclosure this reply starts with, in the question's language, or "" when none is due."""
    if not disclosure_due(disclosed_at=disclosed_at, previous_at=previous_at, question_at=question_at):
        return ""
    return disclosure_text(agent, question)


def fixed_reply_disclosure(
    conversation: Conversation, customer: Message, agent: Agent | None = None, *, language_hint: str = ""
) -> str:
    """The disclosure a reply our code writes (not the agent's answer: the note for a message it cannot read,
    an order's acknowledgement) starts with, when one is due, as for the agent's replies: in the language of
    ``language_hint`` (the customer's words the fixed reply follows), else of the customer's message."""
    previous_at = (
        Message.objects.filter(conversation=conversation, pk__lt=customer.pk)
        .order_by("-pk")
        .values_list("created_at", flat=True)
        .first()
    )
    return reply_disclosure(
        agent=agent or agent_for(conversation.business),
        question=language_hint or customer.text,
        disclosed_at=conversation.disclosed_at,
        previous_at=previous_at,
        question_at=customer.created_at,
    )
