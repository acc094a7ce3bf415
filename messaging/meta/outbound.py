"""What one outgoing message becomes on each platform: request bodies for the Graph API. Pure functions.

- Text is split at sentence boundaries under each platform's limit: WhatsApp 4096 characters, Messenger
  under 2000 characters, Instagram 1000 UTF-8 bytes.
- Product cards become each platform's product messages (``products``): WhatsApp product / product_list
  messages (with a connected commerce catalog), a list or a ``cta_url`` message (without); Messenger and
  Instagram a generic template. The answer's text beside them is short.
- Outside the 24-hour window WhatsApp only takes a template; Messenger and Instagram take a staff reply with
  the HUMAN_AGENT tag within 7 days, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agents.cards import Card
from agents.question import language_of
from messaging.meta import products

WHATSAPP = "whatsapp"
MESSENGER = "messenger"
INSTAGRAM = "instagram"

WHATSAPP_TEXT_LIMIT = 4096
MESSENGER_TEXT_LIMIT = 1999  # "less than 2000 characters"
INSTAGRAM_TEXT_BYTES = 1000
# The answer's text beside product messages: its first sentences up to about this many characters (the
# products' facts are in the product messages).
SHORT_TEXT_CHARS = 320

_SENTENCE_END = re.compile("(?<=[.!?\u2026\u3002\uff01\uff1f])\\s+|\\n+")


def _chars(text: str) -> int:
    return len(text)


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def text_limit(platform: str) -> tuple[int, Callable[[str], int]]:
    if platform == WHATSAPP:
        return WHATSAPP_TEXT_LIMIT, _chars
    if platform == MESSENGER:
        return MESSENGER_TEXT_LIMIT, _chars
    return INSTAGRAM_TEXT_BYTES, _utf8


def _hard_split(piece: str, limit: int, measure: Callable[[str], int]) -> list[str]:
    """Split a run with no usable boundary: at spaces if any, else between characters (never inside one)."""
    out: list[str] = []
    current = ""
    for word in re.split(r"(\s+)", piece):
        if measure(current + word) <= limit:
            current += word
            continue
        if current.strip():
            out.append(current.strip())
        current = word.lstrip()
        while measure(current) > limit:
            cut = len(current)
            while cut > 1 and measure(current[:cut]) > limit:
                cut -= 1
            out.append(current[:cut])
            current = current[cut:]
    if current.strip():
        out.append(current.strip())
    return out


def split_text(text: str, limit: int, measure: Callable[[str], int] = _chars) -> list[str]:
    """Pieces of ``text`` of at most ``limit`` (by ``measure``), cut after sentence ends or line breaks,
    else at spaces; whitespace at the cuts is dropped, nothing else is lost."""
    text = text.strip()
    if not text:
        return []
    if measure(text) <= limit:
        return [text]
    sentences: list[str] = []
    position = 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[position : match.start()])
        position = match.end()
    sentences.append(text[position:])
    parts: list[str] = []
    current = ""
    for sentence in sentences:
        if not sentence:
            continue
        candidate = f"{current} {sentence}" if current else sentence
        if measure(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        if measure(sentence) <= limit:
            current = sentence
        else:
            pieces = _hard_split(sentence, limit, measure)
            parts.extend(pieces[:-1])
            current = pieces[-1] if pieces else ""
    if current:
        parts.append(current)
    return parts


def short_text(text: str, limit: int = SHORT_TEXT_CHARS) -> str:
    """The first whole sentences of ``text`` within ``limit`` characters (always the first sentence)."""
    kept = ""
    for sentence in (s.strip() for s in _SENTENCE_END.split(text.strip())):
        if not sentence:
            continue
        candidate = f"{kept} {sentence}" if kept else sentence
        if kept and len(candidate) > limit:
            break
        kept = candidate
    return kept


def message_parts(
    platform: str,
    text: str,
    cards: list[Card],
    *,
    disclosure: str = "",
    catalog_id: str = "",
    language_hint: str = "",
) -> list[dict[str, Any]]:
    """The content of each send, in order: the AI disclosure (a message of its own, before the answer), the
    answer's text, then its products as the platform's product messages (``products``; the text is then
    short, and on WhatsApp rides in their body where they have one; their buttons' words in the language of
    ``language_hint``, the question the reply answers). WhatsApp contents are message bodies without ``to``;
    Messenger/Instagram contents are the ``message`` object."""
    limit, measure = text_limit(platform)
    pieces = split_text(disclosure, limit, measure)
    words = products.labels(language_hint)
    if platform == WHATSAPP:
        native = products.whatsapp_products(cards, short_text(text), catalog_id, words)
        if not any(products.whatsapp_carries_text(m) for m in native):
            pieces += split_text(short_text(text) if native else text, limit, measure)
        return [{"type": "text", "text": {"preview_url": False, "body": p}} for p in pieces] + native
    template = products.generic_template(cards, words)
    pieces += split_text(short_text(text) if template else text, limit, measure)
    return [{"text": p} for p in pieces] + ([template] if template else [])


def whatsapp_template(name: str, language: str) -> dict[str, Any]:
    """The closed-window fallback: an approved template without variables."""
    return {"type": "template", "template": {"name": name, "language": {"code": language or "en_US"}}}


def whatsapp_recipient(contact_id: str) -> dict[str, str]:
    """Phone numbers go in ``to``; a business-scoped user id (``CC.digits``) in ``recipient``."""
    if "." in contact_id:
        return {"recipient": contact_id}
    return {"to": contact_id}


def request_body(
    platform: str, contact_id: str, content: dict[str, Any], *, tag: str = "", context_id: str = ""
) -> dict[str, Any]:
    """A full Graph API request body for one part."""
    if platform == WHATSAPP:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        body.update(whatsapp_recipient(contact_id))
        if context_id:
            body["context"] = {"message_id": context_id}
        body.update(content)
        return body
    body = {"recipient": {"id": contact_id}}
    if tag:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = tag
    else:
        body["messaging_type"] = "RESPONSE"
    body["message"] = content
    return body


def mark_read_bodies(platform: str, contact_id: str, message_id: str) -> list[dict[str, Any]]:
    """Read receipt and typing indicator for an inbound message: WhatsApp does both in one request;
    Messenger and Instagram take one sender action per request."""
    if platform == WHATSAPP:
        return [
            {
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": message_id,
                "typing_indicator": {"type": "text"},
            }
        ]
    return [
        {"recipient": {"id": contact_id}, "sender_action": "mark_seen"},
        {"recipient": {"id": contact_id}, "sender_action": "typing_on"},
    ]


# The note for a message we cannot read, in each language ``agents.question.language_of`` tells apart:
# ``{what}`` is the kind's name (``UNSUPPORTED_KINDS``) in that language, "" for any other kind.
UNSUPPORTED_REPLIES = {
    "en": "Sorry, I can't open {what} here. I can read text messages, button and list choices, shared "
    "locations, photos and voice messages: please type your question.",
    "de": "Leider kann ich {what} hier nicht öffnen. Ich kann Textnachrichten, die Auswahl aus Buttons und "
    "Listen, geteilte Standorte, Fotos und Sprachnachrichten lesen: Bitte schreiben Sie Ihre Frage.",
    "fr": "Désolé, je ne peux pas ouvrir {what} ici. Je peux lire les messages texte, les choix dans les "
    "boutons et les listes, les positions partagées, les photos et les messages vocaux : merci d'écrire votre "
    "question.",
    "es": "Lo siento, aquí no puedo abrir {what}. Puedo leer mensajes de texto, opciones de botones y listas, "
    "ubicaciones compartidas, fotos y mensajes de voz: escribe tu pregunta, por favor.",
    "it": "Mi dispiace, qui non posso aprire {what}. Posso leggere messaggi di testo, scelte da pulsanti ed "
    "elenchi, posizioni condivise, foto e messaggi vocali: scrivi la tua domanda, per favore.",
    "nl": "Sorry, ik kan {what} hier niet openen. Ik kan tekstberichten, keuzes uit knoppen en lijsten, "
    "gedeelde locaties, foto's en spraakberichten lezen: typ je vraag alsjeblieft.",
}
# What each platform's message kind is called (its key in UNSUPPORTED_NAMES). Photos and voice messages are
# read (messaging.media_reading): "image" and "audio" here are ones that came without their media.
UNSUPPORTED_KINDS = {
    "audio": "voice",
    "voice": "voice",
    "video": "video",
    "sticker": "sticker",
    "document": "document",
    "file": "file",
    "contacts": "contacts",
    "image": "image",
    "order": "order",
}
UNSUPPORTED_NAMES = {
    "en": {
        "voice": "voice messages",
        "video": "videos",
        "sticker": "stickers",
        "document": "documents",
        "file": "files",
        "contacts": "shared contacts",
        "image": "this photo",
        "order": "orders",
        "": "this kind of message",
    },
    "de": {
        "voice": "Sprachnachrichten",
        "video": "Videos",
        "sticker": "Sticker",
        "document": "Dokumente",
        "file": "Dateien",
        "contacts": "geteilte Kontakte",
        "image": "dieses Foto",
        "order": "Bestellungen",
        "": "diese Art von Nachricht",
    },
    "fr": {
        "voice": "les messages vocaux",
        "video": "les vidéos",
        "sticker": "les stickers",
        "document": "les documents",
        "file": "les fichiers",
        "contacts": "les contacts partagés",
        "image": "cette photo",
        "order": "les commandes",
        "": "ce type de message",
    },
    "es": {
        "voice": "mensajes de voz",
        "video": "vídeos",
        "sticker": "stickers",
        "document": "documentos",
        "file": "archivos",
        "contacts": "contactos compartidos",
        "image": "esta foto",
        "order": "pedidos",
        "": "este tipo de mensaje",
    },
    "it": {
        "voice": "i messaggi vocali",
        "video": "i video",
        "sticker": "gli sticker",
        "document": "i documenti",
        "file": "i file",
        "contacts": "i contatti condivisi",
        "image": "questa foto",
        "order": "gli ordini",
        "": "questo tipo di messaggio",
    },
    "nl": {
        "voice": "spraakberichten",
        "video": "video's",
        "sticker": "stickers",
        "document": "documenten",
        "file": "bestanden",
        "contacts": "gedeelde contacten",
        "image": "deze foto",
        "order": "bestellingen",
        "": "dit soort berichten",
    },
}


def unsupported_reply(kind: str, language_hint: str = "") -> str:
    """The note for a message of ``kind`` we cannot read, in the language of ``language_hint`` (the customer's
    words so far; English when it has none)."""
    language = language_of(language_hint, "en")
    what = UNSUPPORTED_NAMES[language][UNSUPPORTED_KINDS.get(kind, "")]
    return UNSUPPORTED_REPLIES[language].format(what=what)
