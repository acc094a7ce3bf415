"""``{% load catalog_links %}`` then ``{{ item.url|http_link }}``: a catalog link, or "" when it is not one we
render (catalogs/links.py). Rows are checked on import and by the database; templates check again so that a
page never depends on how a row was written."""

from __future__ import annotations

from django import template

from catalogs.links import safe_link

register = template.Library()


@register.filter(name="http_link")
def http_link_filter(value: object) -> str:
    return safe_link(value)
