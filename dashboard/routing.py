"""Websocket routes of the admin (appended to the project's in config/asgi.py)."""

from __future__ import annotations

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from dashboard.consumers import ImportProgressConsumer

# The socket authenticates with the session cookie, which a browser also sends from another site's page
# (cross-site websocket hijacking): only pages of this service (ALLOWED_HOSTS) may open it. A request
# without an Origin header is refused too. The chat socket checks each business's own allowlist instead.
websocket_urlpatterns = [
    path(
        "ws/app/<slug:slug>/imports/<int:import_id>/",
        AllowedHostsOriginValidator(ImportProgressConsumer.as_asgi()),
    ),
]
