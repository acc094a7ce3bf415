"""agents.disclosure: the AI disclosure's text, per language and per business; each default's way to a person
is one the handoff recognises."""

from __future__ import annotations

import pytest

from agents.disclosure import DEFAULT_DISCLOSURES, DISCLOSURE_LANGUAGES, disclosure_text
from agents.models import Agent
from agents.prompts import handoff_reason


@pytest.mark.parametrize("language", list(DISCLOSURE_LANGUAGES))
def test_every_default_names_a_way_to_a_person_that_the_handoff_recognises(language: str) -> None:
    # A customer who repeats the disclosure's own words is handed to a person.
    assert handoff_reason(Agent(), DEFAULT_DISCLOSURES[language]) is not None


def test_the_text_follows_the_question_language_and_the_business_own_words() -> None:
    agent = Agent(disclosure_texts={"de": "Hier antwortet ein Bot. Fragen Sie nach einem Mitarbeiter."})
    assert disclosure_text(agent, "Was kostet der Kocher?") == (
        "Hier antwortet ein Bot. Fragen Sie nach einem Mitarbeiter."
    )
    assert disclosure_text(agent, "Combien coûte le réchaud ?") == DEFAULT_DISCLOSURES["fr"]
    assert disclosure_text(agent, "How much is the stove?") == DEFAULT_DISCLOSURES["en"]
    # No telling word: the agent's first configured language, else English.
    assert disclosure_text(Agent(languages=["nl", "en"]), "ok") == DEFAULT_DISCLOSURES["nl"]
    assert disclosure_text(Agent(languages=["pt"]), "ok") == DEFAULT_DISCLOSURES["en"]
    # A blank text of the business's reads the default.
    assert disclosure_text(Agent(disclosure_texts={"en": "  "}), "hello") == DEFAULT_DISCLOSURES["en"]
