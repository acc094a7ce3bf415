from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from config import health
from config.api import api
from inference.metrics import metrics_view

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("django-admin/", admin.site.urls),
    path("", include("messaging.urls")),
    path("", include("dashboard.urls")),
    path("api/v1/", api.urls),
]
