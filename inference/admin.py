"""Admin: the pool's endpoints (with their live state) and the usage record."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from businesses.admin_site import WriteOnlySecretsAdmin
from inference import state
from inference.endpoints import reset_endpoint_cache
from inference.models import InferenceCall, InferenceEndpoint


@admin.register(InferenceEndpoint)
class InferenceEndpointAdmin(WriteOnlySecretsAdmin[InferenceEndpoint]):
    list_display = ["name", "base_url", "model", "weight", "kind", "accepts_images", "enabled", "live_state"]
    list_filter = ["enabled", "kind", "accepts_images"]
    search_fields = ["name", "base_url", "model"]
    actions = ["probe_now"]

    @admin.display(description="state (health, circuit, in flight)")
    def live_state(self, obj: InferenceEndpoint) -> str:
        url = obj.base_url.rstrip("/")
        current = state.read_states([url])[url]
        health = {None: "not probed", True: "healthy"}.get(
            current.healthy, f"unhealthy: {current.health_reason}"
        )
        return f"{health}; circuit {current.circuit}; {current.inflight} in flight"

    def save_model(self, request: HttpRequest, obj: InferenceEndpoint, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # This process sees the change at once; other processes within endpoints.REFRESH_SECONDS.
        reset_endpoint_cache()

    @admin.action(description="Probe the selected endpoints now")
    def probe_now(self, request: HttpRequest, queryset: QuerySet[InferenceEndpoint]) -> None:
        from inference.endpoints import pool_endpoints
        from inference.health import probe_endpoints

        reset_endpoint_cache()
        urls = {row.base_url.rstrip("/") for row in queryset}
        for result in probe_endpoints([e for e in pool_endpoints() if e.url in urls]):
            level = messages.SUCCESS if result.ok else messages.WARNING
            self.message_user(
                request, f"{result.endpoint}: {result.reason} ({result.latency_ms:.0f} ms)", level
            )


@admin.register(InferenceCall)
class InferenceCallAdmin(admin.ModelAdmin[InferenceCall]):
    list_display = [
        "created_at",
        "business",
        "kind",
        "outcome",
        "endpoint",
        "prompt_tokens",
        "completion_tokens",
        "first_token_ms",
        "total_ms",
        "tries",
    ]
    list_filter = ["outcome", "kind", "endpoint"]
    list_select_related = ["business"]
    search_fields = ["business__name", "business__slug", "endpoint", "error"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
