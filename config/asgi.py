"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from devstack import services

services.ensure_core_services()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from dashboard.routing import websocket_urlpatterns as dashboard_websocket_urlpatterns  # noqa: E402
from messaging.meta.asgi import webhook_fast_path  # noqa: E402
from messaging.routing import websocket_urlpatterns  # noqa: E402
from messaging.widget_asgi import upload_body_cap  # noqa: E402

# Origins are checked per business by the consumers (each business has its own allowlist), not here.
application = ProtocolTypeRouter(
    {
        # Meta webhook POSTs skip Django's handler (docs/channels.md); everything else goes through it, the
        # widget's photo uploads with their body capped before Django reads it (docs/widget.md).
        "http": webhook_fast_path(upload_body_cap(django_application)),
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns + dashboard_websocket_urlpatterns)),
    }
)
