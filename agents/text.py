"""Words and sentences of customers' questions, shop texts and model replies, as answers and grounding read
them: a light stemmer, content words, related words, negation, sentence splitting. Pure functions."""

from __future__ import annotations

import math
import re

_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "for",
        "to",
        "in",
        "on",
        "at",
        "by",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "we",
        "they",
        "he",
        "she",
        "me",
        "my",
        "your",
        "our",
        "us",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "have",
        "has",
        "had",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "when",
        "where",
        "why",
        "there",
        "here",
        "please",
        "hi",
        "hello",
        "any",
        "some",
        "much",
        "many",
        "more",
        "sell",
        "sells",
        "selling",
        "buy",
        "purchase",
        "most",
        "also",
        "just",
        "about",
        "if",
        "so",
        "than",
        "then",
        "too",
        "very",
        "want",
        "need",
        "looking",
        "like",
        "get",
        "got",
        "know",
        "tell",
        "der",
        "die",
        "das",
        "ein",
        "eine",
        "einen",
        "und",
        "oder",
        "ist",
        "sind",
        "wie",
        "was",
        "wer",
        "wo",
        "wann",
        "ich",
        "du",
        "sie",
        "wir",
        "ihr",
        "es",
        "mit",
        "für",
        "von",
        "zu",
        "im",
        "in",
        "am",
        "auf",
        "an",
        "bei",
        "habt",
        "haben",
        "hast",
        "gibt",
        "le",
        "la",
        "les",
        "un",
        "une",
        "des",
        "et",
        "ou",
        "est",
        "sont",
        "je",
        "tu",
        "il",
        "elle",
        "nous",
        "vous",
        "de",
        "du",
        "en",
        "pour",
        "avec",
        "el",
        "los",
        "las",
        "y",
        "o",
        "es",
        "son",
        "yo",
        "con",
        "por",
        "para",
        "il",
        "lo",
        "gli",
        "e",
        "di",
        "da",
        "per",
        "con",
        "het",
        "een",
        "en",
        "of",
        "ik",
        "je",
    ]
)
# Related words meet each other: "shipping" finds a passage that says "deliver", "open" one with "hours".
# Keys are stems, values words (stemmed where they are used).
_RELATED = {
    "ship": ("delivery", "deliver", "postage"),
    "deliver": ("shipping", "delivery"),
    "delivery": ("shipping", "deliver"),
    "refund": ("return",),
    "exchang": ("return",),
    "return": ("refund",),
    "open": ("hours", "closed"),
    "hour": ("open", "closed"),
    "pay": ("payment", "card", "cash"),
    "payment": ("pay",),
    "cost": ("price", "fee"),
    "price": ("cost", "fee"),
    "long": ("days", "takes", "time"),
}
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "cannot",
        "can't",
        "cant",
        "don't",
        "dont",
        "doesn't",
        "doesnt",
        "won't",
        "wont",
        "isn't",
        "isnt",
        "aren't",
        "arent",
        "never",
        "none",
        "nothing",
        "without",
        "unavailable",
        "impossible",
        "nicht",
        "kein",
        "keine",
        "keinen",
        "nie",
        "ne",
        "pas",
        "non",
        "jamais",
        "ningún",
        "ninguna",
        "nunca",
        "niet",
        "geen",
        "nooit",
    ]
)


def stem(word: str) -> str:
    """A light English stemmer, enough to meet "shipping"/"ship", "returned"/"return", "bikes"/"bike"."""
    w = word.lower().replace("'s", "")
    for suffix in ("ings", "ing", "ied", "ies", "ed", "es", "s", "y"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix == "es" and not w[:-2].endswith(("s", "x", "z", "ch", "sh")):
                suffix = "s"
            w = w[: -len(suffix)] + ("y" if suffix in ("ied", "ies") else "")
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # shipp -> ship
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]  # bike/bikes -> bik
    return w


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def expanded(stems: set[str]) -> set[str]:
    """``stems`` and their related words' stems."""
    out = set(stems)
    for one in stems:
        out.update(stem(w) for w in _RELATED.get(one, ()))
    return out


def met(question_stems: set[str], sentence: str) -> dict[str, str]:
    """The question's words a sentence meets, by itself or by a related word: {question word: its word}."""
    have = expanded(content_stems(sentence))
    found = {}
    for stem_ in question_stems:
        hits = expanded({stem_}) & have
        if hits:
            found[stem_] = stem_ if stem_ in hits else min(hits)
    return found


def overlap(question_stems: set[str], sentence: str, rarity: dict[str, float] | None = None) -> float:
    """How much of the question a sentence speaks to: each question word it meets (itself or a related
    word) once, longer words counting more (they say more than "day" or "new"), and with ``rarity`` (from
    ``rarities``) words that few of the sentences around it hold counting more ("Switzerland" says more than
    "shipping" in a shipping passage)."""
    return sum(
        (1.0 + min(len(stem_), 8) / 8) * (rarity or {}).get(word, 1.0)
        for stem_, word in met(question_stems, sentence).items()
    )


def rarities(texts: list[str]) -> dict[str, float]:
    """How rare each word is among ``texts`` (an inverse document frequency, 1 for a word in all of them)."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in expanded(content_stems(text)):
            counts[word] = counts.get(word, 0) + 1
    return {word: 1.0 + math.log(len(texts) / count) for word, count in counts.items()}


def is_negative(text: str) -> bool:
    """Whether a sentence says no ("cannot be returned", "not included", "keine")."""
    lowered = text.lower().replace("\u2019", "'")
    return any(w in _NEGATIONS for w in re.findall(r"[\w']+", lowered)) or "n't " in lowered + " "


def sentences(text: str) -> list[str]:
    """The sentences of a passage or description; markdown headings and blank lines are not sentences."""
    out: list[str] = []
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        out += [part.strip() for part in re.split(r"(?<=[.!?;])\s+(?=[A-Z0-9ÄÖÜ\"'(])", line) if part.strip()]
    return out
