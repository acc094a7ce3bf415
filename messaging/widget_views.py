"""The widget's public HTTP surface: the script itself, its public config, the demo storefront, and the
visitor's photo upload.

Everything here is readable by anyone who has the widget key (it sits in the page's source): nothing secret is
served, and the config carries only what the widget shows (name, greeting, theme). The upload is a visitor's
write: like the chat socket, it takes only a page of the business's allowed origins and the visitor's signed
token.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Case, Value, When
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from businesses.models import Business
from businesses.selectors import business_for_demo_page, business_for_widget_key, origin_allowed, scoped
from catalogs.models import Availability, Item
from common import aio
from common.text import holds_nul
from messaging import media, ratelimits, selectors
from messaging.events import AgentInfo, MessagePayload, VisitorMessageEvent
from messaging.media_reading import media_message_receive
from messaging.models import Channel, visitor_group
from messaging.visitors import playground_token_valid, visitor_from_token
from messaging.widget_asgi import TOO_LARGE

WIDGET_PATH = Path(__file__).resolve().parent / "static" / "bizagent" / "widget.js"
# The URL has no version in it (it is pasted into customers' sites once), so caches must come back soon; an
# ETag makes the revalidation a 304.
WIDGET_CACHE_CONTROL = "public, max-age=300, stale-while-revalidate=86400"
CONFIG_CACHE_CONTROL = "public, max-age=60"
DEMO_PRODUCTS = 24


@dataclass(frozen=True)
class _Script:
    mtime: float
    body: bytes
    gzipped: bytes
    etag: str


_script: _Script | None = None


def widget_script() -> _Script:
    """widget.js, its gzip and ETag; read once, re-read when the file changes (development edits)."""
    global _script
    mtime = WIDGET_PATH.stat().st_mtime
    if _script is None or _script.mtime != mtime:
        body = WIDGET_PATH.read_bytes()
        # mtime=0: the same bytes give the same gzip, so every server process agrees on one representation.
        _script = _Script(
            mtime=mtime,
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return _script


def _cross_origin(response: HttpResponse) -> HttpResponse:
    # Any site may load the script and read the public config; no cookies travel with either.
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def widget_js(request: HttpRequest) -> HttpResponse:
    script = widget_script()
    wants_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
    # The ETag names the content; each encoding gets its own tag so that caches never mix them up.
    etag = script.etag[:-1] + ('-gz"' if wants_gzip else '"')
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(
            script.gzipped if wants_gzip else script.body, content_type="text/javascript; charset=utf-8"
        )
        if wants_gzip:
            response["Content-Encoding"] = "gzip"
    response["ETag"] = etag
    response["Cache-Control"] = WIDGET_CACHE_CONTROL
    response["Vary"] = "Accept-Encoding"
    return _cross_origin(response)


def agent_public(business: Business) -> AgentInfo:
    """What the widget may know about the business's agent: its name, greeting and theme. No secrets."""
    from agents.selectors import agent_for

    agent = agent_for(business)
    return {"name": agent.name, "greeting": agent.greeting, "theme": agent.theme()}


@require_GET
def widget_config(request: HttpRequest, widget_key: str) -> HttpResponse:
    business = business_for_widget_key(widget_key)
    if business is None:
        response = JsonResponse({"error": "unknown widget key"}, status=404)
    else:
        allowed = origin_allowed(business, request.headers.get("Origin") or _same_origin(request))
        response = JsonResponse(
            {
                "agent": agent_public(business),
                # Lets the widget say "not available on this site" instead of retrying a refused socket.
                # The websocket consumer is what enforces the list; this only mirrors it.
                "origin_allowed": allowed,
                # The business's own sites, for a page on one of them (the list is not shown to others): a
                # URL in a reply is a link only to these, this server and the shop's catalog links
                # (widget.js), never to a site a feed or a model slipped in.
                "link_origins": [o for o in business.allowed_origins if "*" not in o] if allowed else [],
                # The widget checks a photo's size before sending it (the upload refuses it with 413 anyway).
                "upload_max_bytes": settings.MESSAGE_MEDIA_MAX_BYTES,
            }
        )
        response["Cache-Control"] = CONFIG_CACHE_CONTROL
        response["Vary"] = "Origin"
    return _cross_origin(response)


def _same_origin(request: HttpRequest) -> str:
    # Browsers omit Origin on same-origin GETs; the page is then on this host.
    return f"{request.scheme}://{request.get_host()}"


def demo_products(business: Business) -> list[Item]:
    """Up to DEMO_PRODUCTS products for the storefront grid: one per variant group (a hoodie in four sizes is
    one product on a shop's grid), in stock first."""
    products: list[Item] = []
    groups: set[str] = set()
    in_stock_first = Case(When(availability=Availability.IN_STOCK, then=Value(0)), default=Value(1))
    rows = scoped(business, Item.objects.filter(is_active=True)).order_by(
        in_stock_first, "category", "title", "pk"
    )
    for item in rows[: DEMO_PRODUCTS * 20]:
        group = item.item_group_id or item.external_id
        if group not in groups:
            groups.add(group)
            products.append(item)
            if len(products) == DEMO_PRODUCTS:
                break
    return products


@require_GET
def demo_shop(request: HttpRequest, slug: str) -> HttpResponse:
    business = business_for_demo_page(slug)
    if business is None:
        raise Http404
    widget_src = request.build_absolute_uri("/widget.js")
    return render(
        request,
        "messaging/demo_shop.html",
        {
            "business": business,
            "products": demo_products(business),
            "widget_src": widget_src,
            "snippet_src": f"{settings.PUBLIC_URL}/widget.js",
            "page_origin": _same_origin(request),
            "origin_ok": origin_allowed(business, _same_origin(request)),
        },
    )


# --- The visitor's photo upload (docs/widget.md, "Photos") ---------------------------------------------------

# The visitor's signed token (the chat socket's ``ready`` gave it) and the admin playground's token travel in
# headers: the visitor is known, and refused, before the body is parsed.
VISITOR_HEADER = "X-Bizagent-Visitor"
PREVIEW_HEADER = "X-Bizagent-Preview"
# How long a browser may keep a preflight's answer (Chrome keeps it 2 hours at most): one per visit, not one
# per photo.
PREFLIGHT_MAX_AGE = 3600
# A refused upload is counted by none of the limits (ratelimits.upload_allowed); they are counted over the
# last 60 seconds.
RETRY_AFTER_SECONDS = 60


@dataclass(frozen=True)
class _Photo:
    """An upload's form, checked."""

    file: media.MediaFile
    caption: str
    client_message_id: str


def _refusal(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _too_large() -> JsonResponse:
    mb = settings.MESSAGE_MEDIA_MAX_BYTES / (1024 * 1024)
    return _refusal(413, "too_large", f"Photos are at most {mb:g} MB.")


@csrf_exempt  # no cookie authorises anything here: the page's Origin and the visitor's token do
@require_http_methods(["POST", "OPTIONS"])
async def widget_upload(request: ASGIRequest, widget_key: str) -> HttpResponse:
    """A photo the widget's visitor sends, with an optional caption: stored as their message being read, the
    path a WhatsApp photo takes (messaging.media_reading), and told to their open chat sockets (the visitor's
    group: each joins the conversation, whose reply then streams to it). 202 with the stored message; a retry
    with the same ``client_message_id`` stores nothing new and answers the stored one. The page may read the
    answer (CORS) only when its origin is one of the business's."""
    business = await aio.database(business_for_widget_key, widget_key)
    if business is None:
        response: HttpResponse = _refusal(404, "unknown_widget", "No business has this widget key.")
    else:
        origin = request.headers.get("Origin", "")
        if not origin_allowed(business, origin):
            # No CORS header: the page cannot even read the refusal, as its socket is refused.
            response = _refusal(
                403, "origin_not_allowed", f"Origin {origin or '(none)'} may not use this chat."
            )
        else:
            if request.method == "OPTIONS":
                response = HttpResponse(status=204)
                response["Access-Control-Allow-Methods"] = "POST"
                response["Access-Control-Allow-Headers"] = f"{VISITOR_HEADER}, {PREVIEW_HEADER}"
                response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
            else:
                response = await _upload(request, business)
            # This origin only, never "*"; no credentials: the tokens travel in headers, not cookies.
            response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    return response


async def _upload(request: ASGIRequest, business: Business) -> HttpResponse:
    if request.scope.get(TOO_LARGE):
        return _too_large()  # the body was cut off before Django read it (messaging.widget_asgi)
    visitor_id = visitor_from_token(business.pk, request.headers.get(VISITOR_HEADER))
    if visitor_id is None:
        return _refusal(
            401, "bad_visitor_token", f"{VISITOR_HEADER} must be the visitor token this chat's socket issued."
        )
    photo = await sync_to_async(_photo_of, thread_sensitive=False)(request)
    if isinstance(photo, JsonResponse):
        return photo
    refused = await ratelimits.upload_allowed(
        business.pk, visitor_id, ratelimits.client_address(request.scope)
    )
    if refused:
        response = _refusal(429, refused, ratelimits.REFUSALS[refused])
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    preview = playground_token_valid(business.pk, request.headers.get(PREVIEW_HEADER))
    payload = await aio.database(_photo_store, business, visitor_id, photo, preview)
    layer = get_channel_layer()
    if layer is not None:
        event: VisitorMessageEvent = {"type": "visitor.message", "message": payload}
        await layer.group_send(visitor_group(business.pk, visitor_id), event)
    return JsonResponse({"message": payload}, status=202)


def _photo_of(request: ASGIRequest) -> _Photo | JsonResponse:
    """The upload's form, parsed (off the event loop: Django's multipart parser writes a file over
    FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file) and checked: the photo's bytes, not what the client says
    they are, decide its type (messaging.media)."""
    try:
        upload = request.FILES.get("file")
        caption = request.POST.get("caption", "")
        client_message_id = request.POST.get("client_message_id", "")
    except (MultiPartParserError, SuspiciousOperation):
        return _refusal(400, "bad_request", "The body must be a multipart form.")
    if not 1 <= len(client_message_id) <= 64:
        return _refusal(400, "bad_request", "client_message_id must be a string of 1 to 64 characters.")
    if len(caption) > settings.CHAT_MAX_MESSAGE_CHARS:
        return _refusal(
            400, "too_long", f"Captions are at most {settings.CHAT_MAX_MESSAGE_CHARS} characters."
        )
    if holds_nul(caption + client_message_id):
        return _refusal(
            400, "bad_request", "The caption and client_message_id may not contain NUL characters."
        )
    if upload is None:
        return _refusal(400, "no_file", 'The form has no photo (the field "file").')
    data = upload.read(settings.MESSAGE_MEDIA_MAX_BYTES + 1)
    if len(data) > settings.MESSAGE_MEDIA_MAX_BYTES:
        return _too_large()
    try:
        file = media.media_of(media.IMAGE, data)
    except media.MediaRefused:
        return _refusal(415, "not_an_image", "Photos are JPEG, PNG or WebP images.")
    return _Photo(file=file, caption=caption.strip(), client_message_id=client_message_id)


def _photo_store(business: Business, visitor_id: str, photo: _Photo, preview: bool) -> MessagePayload:
    """The visitor's photo stored (or the one stored by an earlier try), as the protocol sends it."""
    message = media_message_receive(
        business=business,
        channel=Channel.WIDGET,
        contact_external_id=visitor_id,
        kind=media.IMAGE,
        caption=photo.caption,
        client_message_id=photo.client_message_id,
        upload=photo.file,
        preview=preview,
    )
    # None: a retry of an upload already stored (its answer was lost on the way): the stored one.
    stored = message or selectors.visitor_message(business, visitor_id, photo.client_message_id)
    return selectors.message_payload(stored, stored.media.all())
