"""Websocket routes of the admin (appended to the project's in config/asgi.py)."""

from __future__ import annotations

from django.urls import path

from dashboard.consumers import ImportProgressConsumer

websocket_urlpatterns = [
    path("ws/app/<slug:slug>/imports/<int:import_id>/", ImportProgressConsumer.as_asgi()),
]
