"""The widget's public HTTP surface: the script itself, its public config, and the demo storefront.

Everything here is readable by anyone who has the widget key (it sits in the page's source): nothing secret is
served, and the config carries only what the widget shows (name, greeting, theme).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Case, Value, When
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from businesses.models import Business
from businesses.selectors import business_for_demo_page, business_for_widget_key, origin_allowed, scoped
from catalogs.models import Availability, Item
from messaging.events import AgentInfo

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
