"""Django admin for superusers: look into items, documents, imports and feeds (owners use the dashboard)."""

from __future__ import annotations

from django.contrib import admin

from catalogs.models import Chunk, Document, FeedSource, Import, Item


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin[Item]):
    list_display = (
        "external_id",
        "title",
        "business",
        "price",
        "currency",
        "availability",
        "is_active",
        "updated_at",
    )
    list_filter = ("availability", "is_active", "business")
    search_fields = ("external_id", "title", "brand")
    raw_id_fields = ("business",)
    exclude = ("embedding",)
    readonly_fields = ("content_hash", "embedding_model", "created_at", "updated_at")


class ChunkInline(admin.TabularInline[Chunk, Document]):
    model = Chunk
    fields = ("ordinal", "heading", "text", "embedding_model")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin[Document]):
    list_display = ("title", "kind", "filename", "business", "is_active", "updated_at")
    list_filter = ("kind", "business")
    search_fields = ("title", "filename")
    raw_id_fields = ("business",)
    inlines = [ChunkInline]


@admin.register(Import)
class ImportAdmin(admin.ModelAdmin[Import]):
    list_display = (
        "id",
        "business",
        "original_filename",
        "format",
        "mode",
        "state",
        "phase",
        "created_count",
        "updated_count",
        "retired_count",
        "failed_count",
        "created_at",
    )
    list_filter = ("state", "mode", "format")
    raw_id_fields = ("business", "feed")
    readonly_fields = [f.name for f in Import._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False  # imports start through the dashboard, the API or the command (the services)


@admin.register(FeedSource)
class FeedSourceAdmin(admin.ModelAdmin[FeedSource]):
    list_display = (
        "id",
        "business",
        "kind",
        "url",
        "interval_minutes",
        "is_active",
        "last_run_at",
        "last_outcome",
    )
    list_filter = ("kind", "is_active", "last_outcome")
    search_fields = ("url",)
    raw_id_fields = ("business",)
    readonly_fields = [f.name for f in FeedSource._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False  # feeds are added by owners in the dashboard (catalogs.services.feeds)
