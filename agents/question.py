"""A customer's question read on its own: what it asks for (``signals``) and its language (``language_of``).

Pure functions of the words (no shop, no database), read by ``agents.answers`` and ``agents.respond``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.text import content_stems


@dataclass(frozen=True)
class Signals:
    """What the customer's words ask for (independent of the shop)."""

    price: bool = False
    stock: bool = False
    policy: bool = False
    cheapest: bool = False
    dearest: bool = False
    internals: bool = False
    smalltalk: bool = False


# Question words that ask about a policy rather than a product (stems, see agents.text.stem).
_POLICY = frozenset(
    [
        "ship",
        "deliver",
        "delivery",
        "postage",
        "courier",
        "return",
        "refund",
        "exchang",
        "warranty",
        "guarante",
        "open",
        "hour",
        "clos",
        "closed",
        "pay",
        "payment",
        "card",
        "cash",
        "financ",
        "invoice",
        "repair",
        "tune-up",
        "workshop",
        "service",
        "appointment",
        "book",
        "pickup",
        "pick",
        "collect",
        "address",
        "locat",
        "contact",
        "phone",
        "email",
        "privacy",
        "polic",
        "insur",
        "voucher",
        "gift",
        "cancel",
    ]
)
_PRICE_WORDS = re.compile(
    r"\b(?:price|prices|pricing|cost|costs|costing|how much|how many euros|cheap\w*|expensive|fee|fees|"
    r"per day|per hour|rate|rates|charge|kost\w*|preis\w*|wie ?viel|prix|co[uû]t\w*|combien|precio\w*|"
    r"cu[aá]nto|cuesta|prezz\w*|quanto|prijs\w*|hoeveel)\b|[€$£]",
    re.IGNORECASE,
)
_STOCK_WORDS = re.compile(
    r"\b(?:in stock|stock|available|availability|sold out|have (?:it|one|any)|do you have|"
    r"verf[üu]gbar|lieferbar|auf lager|vorr[äa]tig|disponible|en stock|disponibil\w*|op voorraad|leverbaar)\b",
    re.IGNORECASE,
)
_CHEAPEST = re.compile(
    r"\b(?:cheapest|least expensive|lowest price|budget|g[üu]nstigst\w*|billigst\w*)\b", re.I
)
_DEAREST = re.compile(r"\b(?:most expensive|priciest|best|top of the range|teuerst\w*)\b", re.I)
# Asking for what the agent was told, rather than for what the shop sells.
INTERNALS = re.compile(
    r"\b(?:system prompt|(?:your|the) (?:instructions|prompt|rules|guidelines|configuration)|"
    r"catalog(?:ue)? data|business facts|(?:repeat|print|show|reveal|output|dump|list) "
    r"(?:\w+ ){0,3}(?:above|prompt|instructions|context|data block|everything)|"
    r"(?:ignore|disregard|forget) (?:all |any |your |the )?(?:previous |prior |above )?(?:instructions|rules))\b",
    re.IGNORECASE,
)
_SMALLTALK = re.compile(
    r"^\W*(?:hi|hello|hey|hallo|moin|servus|bonjour|salut|hola|ciao|hoi|good (?:morning|afternoon|evening)|"
    r"guten (?:morgen|tag|abend)|thanks?|thank you|thx|cheers|danke\w*|merci|gracias|grazie|dank je|"
    r"ok(?:ay)?|great|perfect|bye|goodbye|tsch[üu]ss)\b[\w\s,!.]{0,24}$",
    re.IGNORECASE,
)


def signals(question: str) -> Signals:
    """What ``question`` asks for: a price, stock, a policy, the cheapest or dearest, the agent's
    instructions, or nothing but small talk."""
    stems = content_stems(question)
    return Signals(
        price=bool(_PRICE_WORDS.search(question)),
        stock=bool(_STOCK_WORDS.search(question)),
        policy=bool({s for s in stems if any(s.startswith(p) for p in _POLICY)}),
        cheapest=bool(_CHEAPEST.search(question)),
        dearest=bool(_DEAREST.search(question)) and bool(_PRICE_WORDS.search(question)),
        internals=bool(INTERNALS.search(question)),
        smalltalk=bool(_SMALLTALK.match(question.strip())) and len(question.split()) <= 6,
    )


_LANGUAGE_WORDS = {
    "de": "der die das und ist ein eine nicht ich sie wir wie viel was wo wann haben habt gibt es kostet "
    "für mit auf ihr euch kann können bitte danke geöffnet heute",
    "fr": "le la les et est un une des je vous nous pas pour avec combien coûte quel quelle est-ce "
    "merci bonjour avez ouvert",
    "es": "el la los las y es un una que no yo usted para con cuánto cuesta tienen hay gracias hola abierto",
    "it": "il lo la gli e è un una che non io per con quanto costa avete c'è grazie ciao aperto",
    "nl": "de het een en is niet ik je jullie wat hoeveel kost hebben heeft voor met bedankt open",
    "en": "the a an and is are you your do does what how much can i we have it to for of with please "
    "open when",
}
_LANGUAGE_SETS = {lang: frozenset(text.split()) for lang, text in _LANGUAGE_WORDS.items()}


def language_of(text: str, default: str = "en") -> str:
    """The customer's language among those the answers are written in (en, de, fr, es, it, nl)."""
    tokens = [w.lower() for w in re.findall(r"[\w'-]+", text)]
    if re.search(r"[äöüß]", text.lower()):
        tokens += ["der", "die"]  # umlauts are German's alone among these
    counts = {lang: sum(1 for t in tokens if t in vocab) for lang, vocab in _LANGUAGE_SETS.items()}
    best = max(counts.values(), default=0)
    if best == 0:
        return default
    # English wins ties: short questions share "a", "is", "die".
    return "en" if counts["en"] == best else max(counts, key=lambda lang: counts[lang])
