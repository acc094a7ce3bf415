"""Downloading a photo or voice note a customer sent on WhatsApp, Messenger or Instagram (docs/channels.md,
"Photos and voice notes").

WhatsApp sends a media id: Graph's ``GET /<media-id>`` with the account's token answers a short-lived URL,
which is downloaded with the same token (messaging.meta.graph, the one Graph plumbing). Messenger and
Instagram send the attachment's URL itself, on Meta's CDN, fetched without a token through common.safe_fetch
(it is a URL a webhook gave us). Either way the bytes are cut off past the kind's limit and their type is read
from the bytes (messaging.media.media_of).
"""

from __future__ import annotations

import io

from common.safe_fetch import FetchRefused, fetch
from messaging.media import AUDIO, IMAGE, MediaFile, MediaRefused, MediaUnavailable, max_bytes, media_of
from messaging.meta import graph
from messaging.models import ChannelAccount

# The Accept header of a CDN download, by kind: what messaging.media takes (it still reads the type from the bytes).
_ACCEPT: dict[str, str] = {
    IMAGE: "image/jpeg, image/png, image/webp",
    AUDIO: "audio/ogg, audio/mp4, audio/mpeg, audio/aac, audio/wav, audio/flac, audio/webm",
}


def inbound_media(account: ChannelAccount, kind: str, source: str) -> MediaFile:
    """The photo or voice note ``source`` names (a WhatsApp media id, or an attachment URL). MediaRefused when
    it is too large, of another type or not downloadable; MediaUnavailable when Graph kept failing (read
    again later)."""
    limit = max_bytes(kind)
    if account.kind == ChannelAccount.Kind.WHATSAPP:
        try:
            return media_of(kind, _whatsapp_download(account, source, limit))
        except graph.TransientGraphError as exc:
            raise MediaUnavailable(str(exc)) from exc
    out = io.BytesIO()
    try:
        fetch(source, out, max_bytes=limit, accept=_ACCEPT[kind])
    except FetchRefused as exc:
        raise MediaRefused(str(exc)) from exc
    return media_of(kind, out.getvalue())


def _whatsapp_download(account: ChannelAccount, media_id: str, limit: int) -> bytes:
    node = graph.get(media_id, token=account.access_token)
    url = str(node.body.get("url") or "")
    if not node.ok or not url:
        raise MediaRefused(f"Graph has no URL for media {media_id}: {node.error_message or node.status}")
    size = node.body.get("file_size")
    if isinstance(size, int) and size > limit:
        raise MediaRefused(f"{size:,} bytes, over the limit of {limit:,}")
    try:
        data, _content_type = graph.download(url, token=account.access_token, max_bytes=limit)
    except graph.DownloadRefused as exc:
        raise MediaRefused(str(exc)) from exc
    return data
