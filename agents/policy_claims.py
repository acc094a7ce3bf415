"""Policy claims: the sentences of a reply that say yes where the shop's passage (an FAQ chunk, the
business facts) says no, or the other way round. Pure functions."""

from __future__ import annotations

import re

from agents import text as words_
from agents.grounding import Issue, sentence_spans

# A sentence takes a side on a policy when it says yes or no ("you can return it", "shipping is free").
_STANCE = re.compile(
    r"\b(?:yes|no|not|can|cannot|can't|may|must|free|included|allowed|possible|accept\w*|offer\w*|"
    r"ja|nein|kann|nicht|kein\w*|oui|non|peut|s[ií]|puede|pu[òo]|nee|kan)\b",
    re.IGNORECASE,
)


def contradicted_passage(sentence: str, passages: list[str]) -> str | None:
    """The passage sentence that ``sentence`` contradicts (one says no where the other says yes), or None.

    A sentence is held against the passage sentences that share the most words with it (at least one that
    is not a stopword); it contradicts them when it takes a side and its negation differs from theirs. It
    errs on the side of "contradicts" when the best matches disagree among themselves: a sentence that a
    policy might deny is never shown as fact."""
    if not _STANCE.search(sentence):
        return None
    stems = words_.content_stems(sentence) - {"yes", "no", "can", "not"}
    if not stems:
        return None
    references = [s for passage in passages for s in words_.sentences(passage)]
    scored = [(words_.overlap(stems, ref), ref) for ref in references]
    top = max((score for score, _ in scored), default=0.0)
    if top <= 0:
        return None
    negative = words_.is_negative(sentence)
    for score, ref in scored:
        if score == top and words_.is_negative(ref) != negative:
            return ref
    return None


def policy_issues(text: str, passages: list[str]) -> list[Issue]:
    """The sentences of ``text`` that contradict the cited passages (a passage's own sentences never do)."""
    quoted = {" ".join(s.split()) for passage in passages for s in words_.sentences(passage)}
    issues = []
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        if " ".join(sentence.split()) in quoted:
            continue
        ref = contradicted_passage(sentence, passages)
        if ref is not None:
            issues.append(Issue("wrong_policy", sentence, start, end, None, ref))
    return issues
