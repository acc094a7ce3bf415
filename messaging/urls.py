"""HTTP routes of the messaging app (the widget's public endpoints and demo page; webhooks)."""

from __future__ import annotations

from django.urls import path

from messaging import widget_views
from messaging.meta import views as meta_views

urlpatterns = [
    path("widget.js", widget_views.widget_js, name="widget-js"),
    path("api/widget/<str:widget_key>/config", widget_views.widget_config, name="widget-config"),
    # messaging/widget_asgi.py caps this route's body before Django reads it: keep its pattern in step.
    path("api/widget/<str:widget_key>/uploads", widget_views.widget_upload, name="widget-upload"),
    path("demo/<slug:slug>/", widget_views.demo_shop, name="demo-shop"),
    # Meta webhooks (docs/channels.md): the callback URLs pasted into Meta's dashboard.
    path("webhooks/<str:platform>", meta_views.webhook, name="meta-webhook"),
]
