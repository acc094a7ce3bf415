from __future__ import annotations

from django.urls import path

from regressions import api

app_name = "regressions"

urlpatterns = [
    path("api/v1/regressions/runs", api.run_create, name="run-create"),
    path("api/v1/regressions/runs/latest", api.run_latest, name="run-latest"),
    path("api/v1/regressions/runs/<int:run_id>", api.run_detail, name="run-detail"),
]
