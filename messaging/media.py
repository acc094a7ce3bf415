"""Photos and voice notes customers send (docs/channels.md, "Photos and voice notes"): what is taken (types read
from the bytes themselves, never from what the sender claims; sizes within MESSAGE_MEDIA_MAX_BYTES for a photo
and MESSAGE_AUDIO_MAX_BYTES for a voice note), the question the agent is asked from what the pool read in one,
the fixed replies when it cannot be read, and the purge after MESSAGE_MEDIA_RETENTION_DAYS.

Pure functions and the purge; reading one (download, description, transcription) is messaging.media_reading.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from agents.question import language_of
from messaging.models import MessageMedia

logger = logging.getLogger(__name__)

IMAGE = MessageMedia.Kind.IMAGE
AUDIO = MessageMedia.Kind.AUDIO

# Accepted types by their first bytes: what every vision server we target decodes, and what OpenAI's
# transcription API (and vLLM's Whisper, speaches, LocalAI) takes. WhatsApp voice notes are Ogg Opus;
# Messenger's and Instagram's are MP4 (AAC).
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
_AUDIO_SIGNATURES = (
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", "audio/webm"),
)
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/webm": "webm",
}


class MediaRefused(Exception):
    """Media that is not taken (too large, not an accepted type, not downloadable); the message is for logs."""


class MediaUnavailable(Exception):
    """The platform could not give the bytes now (Graph kept failing): read it again later."""


@dataclass(frozen=True)
class MediaFile:
    kind: str  # MessageMedia.Kind
    data: bytes
    content_type: str  # one of EXTENSIONS

    @property
    def filename(self) -> str:
        return f"{self.kind}.{EXTENSIONS[self.content_type]}"


def max_bytes(kind: str) -> int:
    return settings.MESSAGE_AUDIO_MAX_BYTES if kind == AUDIO else settings.MESSAGE_MEDIA_MAX_BYTES


def image_type(data: bytes) -> str | None:
    """The accepted image type these bytes are, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in _IMAGE_SIGNATURES if data.startswith(signature)), None)


def audio_type(data: bytes) -> str | None:
    """The accepted audio type these bytes are, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        # An MPEG frame: layer bits 00 are ADTS (AAC), anything else an MP3 frame.
        return "audio/aac" if data[1] & 0x06 == 0 else "audio/mpeg"
    return next((kind for signature, kind in _AUDIO_SIGNATURES if data.startswith(signature)), None)


def media_of(kind: str, data: bytes) -> MediaFile:
    """The photo or voice note these downloaded bytes are; MediaRefused when they are too many or not an
    accepted type."""
    limit = max_bytes(kind)
    if len(data) > limit:
        raise MediaRefused(f"{len(data):,} bytes, over the limit of {limit:,}")
    content_type = audio_type(data) if kind == AUDIO else image_type(data)
    if content_type is None:
        raise MediaRefused(
            "not an Ogg, MP3, MP4, AAC, WAV, FLAC or WebM recording"
            if kind == AUDIO
            else "not a JPEG, PNG or WebP image"
        )
    return MediaFile(kind, data, content_type)


def question_of(kind: str, caption: str, reading: str) -> str:
    """What the agent is asked, and retrieval searches with: a voice note's transcript; a photo's caption and
    what the photo shows."""
    if kind == AUDIO:
        return reading
    if caption:
        return f"{caption}\n(My photo shows: {reading})"
    return f"Do you have this? My photo shows: {reading}"


# The fixed replies, by the media's kind and what became of it: "unread" (no endpoint could read it) or
# "refused" (too large, another type, not downloadable). Each in the customer's language (their words so far).
UNREAD_REPLIES: dict[str, dict[str, str]] = {
    IMAGE: {
        "en": "Thanks for the photo! I can't look at pictures here, so could you tell me in a few words what "
        "you are looking for (the product, its colour, its size)?",
        "de": "Danke für das Foto! Ich kann hier keine Bilder ansehen. Können Sie mir in ein paar Worten "
        "sagen, was Sie suchen (das Produkt, die Farbe, die Größe)?",
        "fr": "Merci pour la photo ! Je ne peux pas voir les images ici : pouvez-vous me dire en quelques mots "
        "ce que vous cherchez (le produit, sa couleur, sa taille) ?",
        "es": "¡Gracias por la foto! Aquí no puedo ver imágenes: ¿me dices en pocas palabras qué buscas (el "
        "producto, su color, su talla)?",
        "it": "Grazie per la foto! Qui non posso vedere le immagini: mi dici in poche parole cosa cerchi (il "
        "prodotto, il colore, la taglia)?",
        "nl": "Bedankt voor de foto! Ik kan hier geen afbeeldingen bekijken. Kun je in een paar woorden "
        "zeggen wat je zoekt (het product, de kleur, de maat)?",
    },
    AUDIO: {
        "en": "Thanks for your voice message! I can't listen to audio here, so could you type your question?",
        "de": "Danke für Ihre Sprachnachricht! Ich kann hier keine Audios anhören. Können Sie Ihre Frage "
        "bitte schreiben?",
        "fr": "Merci pour votre message vocal ! Je ne peux pas écouter d'audio ici : pouvez-vous écrire votre "
        "question ?",
        "es": "¡Gracias por tu mensaje de voz! Aquí no puedo escuchar audios: ¿puedes escribir tu pregunta?",
        "it": "Grazie per il messaggio vocale! Qui non posso ascoltare audio: puoi scrivere la tua domanda?",
        "nl": "Bedankt voor je spraakbericht! Ik kan hier geen audio beluisteren. Kun je je vraag typen?",
    },
}
REFUSED_REPLIES: dict[str, dict[str, str]] = {
    IMAGE: {
        "en": "Sorry, I couldn't open that photo: I can take JPEG, PNG or WebP pictures up to {mb} MB. Could "
        "you describe in a few words what you are looking for?",
        "de": "Leider konnte ich das Foto nicht öffnen: Ich nehme JPEG-, PNG- oder WebP-Bilder bis {mb} MB. "
        "Können Sie in ein paar Worten beschreiben, was Sie suchen?",
        "fr": "Désolé, je n'ai pas pu ouvrir cette photo : j'accepte les images JPEG, PNG ou WebP jusqu'à "
        "{mb} Mo. Pouvez-vous décrire en quelques mots ce que vous cherchez ?",
        "es": "Lo siento, no pude abrir esa foto: acepto imágenes JPEG, PNG o WebP de hasta {mb} MB. ¿Puedes "
        "describir en pocas palabras qué buscas?",
        "it": "Mi dispiace, non sono riuscito ad aprire la foto: accetto immagini JPEG, PNG o WebP fino a "
        "{mb} MB. Puoi descrivere in poche parole cosa cerchi?",
        "nl": "Sorry, ik kon die foto niet openen: ik neem JPEG-, PNG- of WebP-afbeeldingen tot {mb} MB. Kun "
        "je in een paar woorden beschrijven wat je zoekt?",
    },
    AUDIO: {
        "en": "Sorry, I couldn't play that voice message (I can take recordings up to {mb} MB). Could you "
        "type your question?",
        "de": "Leider konnte ich die Sprachnachricht nicht abspielen (ich nehme Aufnahmen bis {mb} MB). "
        "Können Sie Ihre Frage bitte schreiben?",
        "fr": "Désolé, je n'ai pas pu lire ce message vocal (j'accepte les enregistrements jusqu'à {mb} Mo). "
        "Pouvez-vous écrire votre question ?",
        "es": "Lo siento, no pude reproducir ese mensaje de voz (acepto grabaciones de hasta {mb} MB). "
        "¿Puedes escribir tu pregunta?",
        "it": "Mi dispiace, non sono riuscito a riprodurre il messaggio vocale (accetto registrazioni fino a "
        "{mb} MB). Puoi scrivere la tua domanda?",
        "nl": "Sorry, ik kon dat spraakbericht niet afspelen (ik neem opnames tot {mb} MB). Kun je je vraag "
        "typen?",
    },
}


def fixed_reply(kind: str, state: str, language_hint: str) -> str:
    """The reply to media that was not read (``state`` unread) or not taken (refused), in the language of
    ``language_hint`` (the customer's words so far; English when they tell none)."""
    language = language_of(language_hint, "en")
    if state == MessageMedia.State.REFUSED:
        mb = max_bytes(kind) / (1024 * 1024)
        return REFUSED_REPLIES[kind][language].format(mb=f"{mb:g}")
    return UNREAD_REPLIES[kind][language]


def media_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the files of media older than MESSAGE_MEDIA_RETENTION_DAYS; the rows keep kind, type, size and
    what was read. Returns how many files were deleted."""
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
            "deleted %d customer photos and voice notes older than %d days",
            done,
            settings.MESSAGE_MEDIA_RETENTION_DAYS,
        )
    return done
