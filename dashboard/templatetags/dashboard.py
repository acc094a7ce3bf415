"""Small template helpers for the admin."""

from __future__ import annotations

from django import template
from django.http import HttpRequest

register = template.Library()

_SECTIONS = ("overview", "inbox", "catalog", "agent", "install", "channel", "analytics", "api_key")


@register.simple_tag(takes_context=True)
def active(context: template.Context, section: str) -> str:
    """``active`` when the current page belongs to the sidebar section (by URL name prefix)."""
    request: HttpRequest | None = context.get("request")
    match = getattr(request, "resolver_match", None)
    name = match.url_name if match else ""
    return "active" if name and name.startswith(section) else ""


@register.filter
def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


@register.filter
def availability_label(value: str) -> str:
    from catalogs.models import Availability

    return str(Availability(value).label) if value in Availability.values else value
