from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from agents.inference.metrics import metrics_view
from config import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("django-admin/", admin.site.urls),
    path("", include("messaging.urls")),
    path("", include("dashboard.urls")),
    path("", include("catalogs.urls")),
]
