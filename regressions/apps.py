from __future__ import annotations

from django.apps import AppConfig


class RegressionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "regressions"
