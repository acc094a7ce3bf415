from __future__ import annotations

from django.urls import path

from catalogs import api

app_name = "catalogs"

urlpatterns = [
    path("api/v1/catalog/imports", api.import_create, name="import-create"),
    path("api/v1/catalog/imports/<int:import_id>", api.import_detail, name="import-detail"),
    path("api/v1/catalog/imports/<int:import_id>/errors.csv", api.import_errors_csv, name="import-errors"),
]
