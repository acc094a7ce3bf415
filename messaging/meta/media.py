"""Downloading a photo a customer sent on WhatsApp, Messenger or Instagram (docs/channels.md, "Photos").

WhatsApp sends a media id: Graph's ``GET /<media-id>`` with the account's token answers a short-lived URL,
which is downloaded with the same token (messaging.meta.graph, the one Graph plumbing). Messenger and
Instagram send the attachment's URL itself, on Meta's CDN, fetched without a token through common.safe_fetch
(it is a URL a webhook gave us). Either way the bytes are cut off past MESSAGE_MEDIA_MAX_BYTES and their type
is read from the bytes (messaging.media.photo_of).
"""

from __future__ import annotations

import io

from django.conf import settings

from common.safe_fetch import FetchRefused, fetch
from messaging.media import MediaRefused, Photo, photo_of
from messaging.meta import graph
from messaging.meta.parser import InboundMessage
from messaging.models import ChannelAccount


def inbound_photo(account: ChannelAccount, event: InboundMessage) -> Photo:
    """The photo ``event`` carries. MediaRefused when it is too large, of another type or not downloadable;
    graph.TransientGraphError when Graph kept failing (the delivery is processed again later)."""
    limit = settings.MESSAGE_MEDIA_MAX_BYTES
    if event.media_id:
        node = graph.get(event.media_id, token=account.access_token)
        url = str(node.body.get("url") or "")
        if not node.ok or not url:
            raise MediaRefused(
                f"Graph has no URL for media {event.media_id}: {node.error_message or node.status}"
            )
        size = node.body.get("file_size")
        if isinstance(size, int) and size > limit:
            raise MediaRefused(f"{size:,} bytes, over MESSAGE_MEDIA_MAX_BYTES")
        try:
            data, _content_type = graph.download(url, token=account.access_token, max_bytes=limit)
        except graph.DownloadRefused as exc:
            raise MediaRefused(str(exc)) from exc
        return photo_of(data)
    out = io.BytesIO()
    try:
        fetch(event.media_url, out, max_bytes=limit, accept="image/jpeg, image/png, image/webp")
    except FetchRefused as exc:
        raise MediaRefused(str(exc)) from exc
    return photo_of(out.getvalue())
