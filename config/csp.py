"""Content-Security-Policy on every HTML page we serve (the dashboard, the demo storefront, Django's admin).

Scripts come from this origin only: no inline script, no inline event handlers, no ``eval``, so a catalog
value or a chat message that slips past escaping cannot run. Styles may be inline (the templates and the
widget's shadow root carry ``style`` attributes and ``<style>`` elements; CSS cannot run script). Images may
come from any http(s) host (catalog pictures, theme avatars), and from the page's own object URLs (a photo the
visitor sends in the widget). Sockets go to this host (the dashboard's live views, the widget). Django 5.2 has
no ``django.middleware.csp`` (it arrives in 6.0), hence this middleware.

Only ``text/html`` responses get the header: ``/widget.js`` is served to other sites' pages, and their own
policy is what governs it there (a CSP header on a script response has no effect on the page loading it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

HEADER = "Content-Security-Policy"


def policy(request: HttpRequest) -> str:
    socket = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            # blob: the widget shows a photo the visitor sends from its own file (an object URL).
            "img-src 'self' https: http: data: blob:",
            # 'self' covers same-host sockets in current browsers; the explicit origin covers older ones.
            f"connect-src 'self' {socket}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _with_policy(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if response.get("Content-Type", "").startswith("text/html") and HEADER not in response:
        response[HEADER] = policy(request)
    return response


@sync_and_async_middleware
def content_security_policy_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    # Both flavours, so that async views stay on the event loop (a sync-only middleware would wrap them).
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            return _with_policy(request, await get_response(request))

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _with_policy(request, get_response(request))

    return middleware
