"""Websocket routes."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from messaging.consumers import ChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^ws/chat/(?P<widget_key>[A-Za-z0-9_\-]{1,40})/$", ChatConsumer.as_asgi()),
]
