"""The body cap of the widget's photo upload (``POST /api/widget/<key>/uploads``), in front of Django.

Django's ASGI handler reads a request's whole body (into memory, then a temporary file) before any view runs,
however large it is: the view alone could refuse a 1 GB upload only after it was on disk. This wrapper stops
the read at ``upload_max_body_bytes()``: a Content-Length above it is refused before a byte of the body is
read, and a body that turns out larger (chunked, without a length) is cut off there, the rest of it dropped.
Either way Django gets an ended body and a mark in the scope (``TOO_LARGE``), and the view answers 413 with
its usual CORS headers without parsing anything (``widget_views.widget_upload``). Every other request goes to
the wrapped application untouched.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
# Loose on purpose: Django's, Channels' and uvicorn's type hints for the same interface disagree.
ASGIApp = Callable[..., Awaitable[None]]

# messaging/urls.py's "widget-upload" route.
_PATH = re.compile(r"/api/widget/[^/]+/uploads")
TOO_LARGE = "bizagent.upload_too_large"


def upload_max_body_bytes() -> int:
    """The largest upload body read: the photo (MESSAGE_MEDIA_MAX_BYTES), a caption of CHAT_MAX_MESSAGE_CHARS
    characters (up to 4 bytes each in UTF-8), and room for the client id and the multipart framing."""
    return settings.MESSAGE_MEDIA_MAX_BYTES + 4 * settings.CHAT_MAX_MESSAGE_CHARS + 16 * 1024


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def upload_body_cap(app: ASGIApp) -> ASGIApp:
    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and _PATH.fullmatch(scope.get("path", ""))
        ):
            await app(scope, receive, send)
            return
        limit = upload_max_body_bytes()
        # Our own copy: the mark set while the body is read must be in the scope the request is built from.
        scope = dict(scope)
        read = 0
        # "cut": end the body now (the next read); "ended": Django has the whole body it will get.
        state = "reading"
        length = _content_length(scope)
        if length is not None and length > limit:
            scope[TOO_LARGE] = True
            state = "cut"

        async def capped() -> Mapping[str, Any]:
            nonlocal read, state
            if state == "cut":
                state = "ended"
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            # After the body Django only listens for a disconnect: the rest of a cut body is dropped.
            while state == "ended" and message["type"] == "http.request":
                message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    scope[TOO_LARGE] = True
                    state = "ended"
                    return {"type": "http.request", "body": b"", "more_body": False}
                if not message.get("more_body", False):
                    state = "ended"
            return message

        await app(scope, capped, send)

    return application
