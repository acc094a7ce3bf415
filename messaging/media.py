"""Photos customers send (docs/channels.md, "Photos"): checking what came, asking the pool's image endpoint
what it shows, the question the agent answers from it, the fixed replies when it cannot, storing it and
purging it after MESSAGE_MEDIA_RETENTION_DAYS.

A channel downloads the bytes its own way (messaging.meta.media) within ``MESSAGE_MEDIA_MAX_BYTES``; the type
is read from the bytes themselves, never from what the sender claims.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone

from agents.question import language_of
from common import aio
from inference.chat import complete_chat
from inference.endpoints import apool_accepts_images
from inference.types import ChatRequest, InferenceError
from messaging.models import Message, MessageMedia

logger = logging.getLogger(__name__)

# Accepted types by their first bytes (what every vision server we target decodes).
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
DESCRIBE_MAX_TOKENS = 80
DESCRIBE_PROMPT = (
    "You help a shop find products. Describe the product in the customer's photo in one short sentence: what "
    "it is, its colour and material, and any brand or text printed on it. No preamble."
)


class MediaRefused(Exception):
    """A photo that is not taken (too large, not JPEG/PNG/WebP, not downloadable); the message is for logs."""


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str  # image/jpeg, image/png or image/webp


def image_type(data: bytes) -> str | None:
    """The accepted type these bytes are, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)


def photo_of(data: bytes) -> Photo:
    """The photo these downloaded bytes are; MediaRefused when they are too many or not an accepted type."""
    if len(data) > settings.MESSAGE_MEDIA_MAX_BYTES:
        raise MediaRefused(f"{len(data):,} bytes, over MESSAGE_MEDIA_MAX_BYTES")
    kind = image_type(data)
    if kind is None:
        raise MediaRefused("not a JPEG, PNG or WebP image")
    return Photo(data, kind)


def photo_describe(*, business_id: int, photo: Photo, caption: str) -> str:
    """What the pool's image endpoint says the photo shows, or "" when the pool has none or it failed (the
    customer is then asked to describe it)."""
    return aio.run(_describe(business_id, photo, caption))


async def _describe(business_id: int, photo: Photo, caption: str) -> str:
    if not await apool_accepts_images():
        return ""
    data_url = f"data:{photo.content_type};base64,{base64.b64encode(photo.data).decode('ascii')}"
    request = ChatRequest(
        business_id=business_id,
        messages=[
            {"role": "system", "content": DESCRIBE_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": caption or "What is this?"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            },
        ],
        max_tokens=DESCRIBE_MAX_TOKENS,
        temperature=0.0,
        images=True,
    )
    try:
        result = await complete_chat(request)
    except InferenceError as exc:
        logger.warning("describing a photo for business %s failed: %s", business_id, exc)
        return ""
    return " ".join(result.text.split())


def photo_question(caption: str, description: str) -> str:
    """What the agent is asked, and retrieval searches with: the caption and what the photo shows."""
    if caption:
        return f"{caption}\n(My photo shows: {description})"
    return f"Do you have this? My photo shows: {description}"


DESCRIBE_IT_REPLIES = {
    "en": "Thanks for the photo! I can't look at pictures here, so could you tell me in a few words what you "
    "are looking for (the product, its colour, its size)?",
    "de": "Danke für das Foto! Ich kann hier keine Bilder ansehen. Können Sie mir in ein paar Worten sagen, "
    "was Sie suchen (das Produkt, die Farbe, die Größe)?",
    "fr": "Merci pour la photo ! Je ne peux pas voir les images ici : pouvez-vous me dire en quelques mots ce "
    "que vous cherchez (le produit, sa couleur, sa taille) ?",
    "es": "¡Gracias por la foto! Aquí no puedo ver imágenes: ¿me dices en pocas palabras qué buscas (el "
    "producto, su color, su talla)?",
    "it": "Grazie per la foto! Qui non posso vedere le immagini: mi dici in poche parole cosa cerchi (il "
    "prodotto, il colore, la taglia)?",
    "nl": "Bedankt voor de foto! Ik kan hier geen afbeeldingen bekijken. Kun je in een paar woorden zeggen wat "
    "je zoekt (het product, de kleur, de maat)?",
}
REFUSED_REPLIES = {
    "en": "Sorry, I couldn't open that photo: I can take JPEG, PNG or WebP pictures up to {mb} MB. Could you "
    "describe in a few words what you are looking for?",
    "de": "Leider konnte ich das Foto nicht öffnen: Ich nehme JPEG-, PNG- oder WebP-Bilder bis {mb} MB. "
    "Können Sie in ein paar Worten beschreiben, was Sie suchen?",
    "fr": "Désolé, je n'ai pas pu ouvrir cette photo : j'accepte les images JPEG, PNG ou WebP jusqu'à {mb} Mo. "
    "Pouvez-vous décrire en quelques mots ce que vous cherchez ?",
    "es": "Lo siento, no pude abrir esa foto: acepto imágenes JPEG, PNG o WebP de hasta {mb} MB. ¿Puedes "
    "describir en pocas palabras qué buscas?",
    "it": "Mi dispiace, non sono riuscito ad aprire la foto: accetto immagini JPEG, PNG o WebP fino a {mb} MB. "
    "Puoi descrivere in poche parole cosa cerchi?",
    "nl": "Sorry, ik kon die foto niet openen: ik neem JPEG-, PNG- of WebP-afbeeldingen tot {mb} MB. Kun je "
    "in een paar woorden beschrijven wat je zoekt?",
}


def describe_it_reply(language_hint: str) -> str:
    """Asks the customer to describe the photo, in the language of ``language_hint`` (their words so far)."""
    return DESCRIBE_IT_REPLIES[language_of(language_hint, "en")]


def refused_reply(language_hint: str) -> str:
    mb = settings.MESSAGE_MEDIA_MAX_BYTES / (1024 * 1024)
    return REFUSED_REPLIES[language_of(language_hint, "en")].format(mb=f"{mb:g}")


def media_store(*, message: Message, photo: Photo, description: str) -> MessageMedia:
    """Keep the photo with the customer's message, under its business's folder."""
    media = MessageMedia(
        business_id=message.business_id,
        message=message,
        content_type=photo.content_type,
        size=len(photo.data),
        description=description,
    )
    media.file.save(
        f"{uuid.uuid4().hex}.{_EXTENSIONS[photo.content_type]}", ContentFile(photo.data), save=False
    )
    media.save(force_insert=True)
    return media


def media_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the files of photos older than MESSAGE_MEDIA_RETENTION_DAYS; the rows keep type, size and
    description. Returns how many files were deleted."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.MESSAGE_MEDIA_RETENTION_DAYS)
    done = 0
    stale = MessageMedia.objects.filter(created_at__lt=cutoff).exclude(file="").only("pk", "file")
    for media in stale.iterator(chunk_size=500):
        name = media.file.name or ""
        # The row first: a crash between the two leaves an orphan file, never a row naming a deleted one.
        if MessageMedia.objects.filter(pk=media.pk).exclude(file="").update(file="") == 1:
            media.file.storage.delete(name)
            done += 1
    if done:
        logger.info(
            "deleted %d customer photos older than %d days", done, settings.MESSAGE_MEDIA_RETENTION_DAYS
        )
    return done
