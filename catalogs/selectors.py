"""Catalog reads: items by id, items needing an embedding. Every function takes the business first and never
returns another business's rows.

The hybrid search is ``catalogs.search``; the reads of catalog imports are ``catalogs.import_selectors``.
"""

from __future__ import annotations

from collections.abc import Iterable

from businesses.models import Business
from catalogs.models import Item


def items_by_ids(business: Business, ids: Iterable[int]) -> dict[int, Item]:
    """This business's active items among ``ids`` (for citations and cards); unknown or foreign ids drop out."""
    wanted = {int(i) for i in ids}
    if not wanted:
        return {}
    return {item.pk: item for item in Item.objects.filter(business=business, is_active=True, pk__in=wanted)}


def items_by_external_ids(business: Business, external_ids: Iterable[str]) -> dict[str, Item]:
    """This business's active items among ``external_ids`` (its SKUs: a cart's retailer ids), by external id;
    unknown ones drop out."""
    wanted = {str(i) for i in external_ids if str(i)}
    if not wanted:
        return {}
    return {
        item.external_id: item
        for item in Item.objects.filter(business=business, is_active=True, external_id__in=wanted)
    }


def items_needing_embedding(business: Business, *, model_name: str, limit: int | None = None) -> list[int]:
    """Ids of this business's active items with no vector, or one from another model than ``model_name``."""
    from django.db.models import Q

    qs = (
        Item.objects.filter(business=business, is_active=True)
        .filter(Q(embedding__isnull=True) | ~Q(embedding_model=model_name))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return list(qs[:limit] if limit else qs)
