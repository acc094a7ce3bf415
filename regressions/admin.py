"""Django admin for superusers: look into suites and runs (owners use the dashboard's Regression suite)."""

from __future__ import annotations

from django.contrib import admin

from regressions.models import RegressionCase, RegressionResult, RegressionRun


@admin.register(RegressionCase)
class RegressionCaseAdmin(admin.ModelAdmin[RegressionCase]):
    list_display = ("question", "kind", "language", "business", "active", "updated_at")
    list_filter = ("kind", "active", "language")
    search_fields = ("question", "source_key")
    raw_id_fields = ("business", "item", "chunk", "curated")


class RegressionResultInline(admin.TabularInline[RegressionResult, RegressionRun]):
    model = RegressionResult
    fields = ("question", "passed", "missing", "reply_text")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(RegressionRun)
class RegressionRunAdmin(admin.ModelAdmin[RegressionRun]):
    list_display = ("pk", "business", "trigger", "state", "passed", "failed", "created_at")
    list_filter = ("state", "trigger")
    raw_id_fields = ("business",)
    inlines = (RegressionResultInline,)
