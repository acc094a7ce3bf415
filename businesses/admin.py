from django.contrib import admin

from businesses.models import ApiKey, Business, Membership


class MembershipInline(admin.TabularInline[Membership, Business]):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Business)
class BusinessAdmin(admin.ModelAdmin[Business]):
    list_display = ["name", "slug", "timezone", "created_at"]
    search_fields = ["name", "slug"]
    readonly_fields = ["widget_key"]
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["name", "business", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "last_used_at"]
    list_filter = ["business"]
