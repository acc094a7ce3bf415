"""The AI disclosure: what tells a customer they are talking to an automated assistant, and that they can ask for
a person (Messenger's policy for automated experiences; the EU AI Act, Article 50).

``messaging`` decides when a reply carries it (``messaging.disclosure``); this module says what it reads, in the
customer's language, from the business's own text or the defaults below. Every default names a phrase that
``agents.prompts.handoff_reason`` hands to a person (tests/agents/test_disclosure.py checks each one), so the
way out it promises works.
"""

from __future__ import annotations

from agents.models import Agent
from agents.question import language_of

# The languages ``agents.question.language_of`` tells apart, with their names for the settings form.
DISCLOSURE_LANGUAGES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
}
DISCLOSURE_MAX_CHARS = 500

DEFAULT_DISCLOSURES: dict[str, str] = {
    "en": "You're chatting with an automated assistant (AI). "
    "To talk to a person from our team instead, just say so at any time.",
    "de": "Sie schreiben mit einem automatischen Assistenten (KI). "
    "Möchten Sie lieber mit einem Mitarbeiter sprechen, sagen Sie es einfach jederzeit.",
    "fr": "Vous discutez avec un assistant automatique (IA). "
    "Pour parler à une personne de notre équipe, demandez-le à tout moment.",
    "es": "Estás hablando con un asistente automático (IA). "
    "Si prefieres hablar con una persona de nuestro equipo, dilo en cualquier momento.",
    "it": "Stai parlando con un assistente automatico (IA). "
    "Se preferisci parlare con una persona del nostro team, dillo in qualsiasi momento.",
    "nl": "Je chat met een geautomatiseerde assistent (AI). "
    "Wil je liever een medewerker spreken? Zeg het gerust, op elk moment.",
}


def disclosure_default(language: str) -> str:
    return DEFAULT_DISCLOSURES.get(language, DEFAULT_DISCLOSURES["en"])


def disclosure_text(agent: Agent, question: str) -> str:
    """The disclosure in the language of ``question`` (``agents.question.language_of``; a question with no
    telling word reads in the agent's first configured language): the business's own text for it, else the
    default."""
    configured = [str(code) for code in agent.languages or [] if str(code) in DEFAULT_DISCLOSURES]
    language = language_of(question, configured[0] if configured else "en")
    own = str((agent.disclosure_texts or {}).get(language) or "").strip()
    return own or disclosure_default(language)
