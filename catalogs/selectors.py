"""Catalog reads: items (browsed, by id, by external id, needing an embedding) and documents. Every function
takes the business first and never returns another business's rows.

The hybrid search is ``catalogs.search``; the reads of catalog imports are ``catalogs.import_selectors``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Q, QuerySet

from businesses.models import Business
from catalogs.models import Document, Item

# Columns no reader of a row shows (the vector and Postgres's search columns): left in the database.
_UNSHOWN = ("embedding", "search_vector", "search_trigrams")


def items_browse(
    business: Business,
    *,
    query: str = "",
    availability: str = "",
    category: str = "",
    include_retired: bool = False,
) -> QuerySet[Item]:
    """The business's items by title, narrowed by a title/SKU/brand substring, availability and category;
    retired items only when asked."""
    items = Item.objects.filter(business=business)
    if not include_retired:
        items = items.filter(is_active=True)
    if query:
        items = items.filter(
            Q(title__icontains=query) | Q(external_id__icontains=query) | Q(brand__icontains=query)
        )
    if availability:
        items = items.filter(availability=availability)
    if category:
        items = items.filter(category=category)
    return items.order_by("title", "pk").defer(*_UNSHOWN)


def item_by_external_id(business: Business, external_id: str) -> Item | None:
    """The business's item with this id in its own catalog (retired ones too)."""
    return Item.objects.filter(business=business, external_id=external_id).defer(*_UNSHOWN).first()


def documents_list(business: Business) -> QuerySet[Document]:
    """The business's documents (FAQs, policies, pages), newest first, with how many chunks each has."""
    return Document.objects.filter(business=business).annotate(chunk_count=Count("chunks")).order_by("-pk")


def document_of(business: Business, document_id: int) -> Document | None:
    return documents_list(business).filter(pk=document_id).first()


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
