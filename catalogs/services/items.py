"""An import's product rows: validated rows are upserted in batches keyed by ``(business, external_id)``; a
content hash decides created / updated / unchanged, and an item whose embedded text did not change keeps
its vector. Runs inside the import's transaction (``imports.import_run``). One item written through the REST
API (``item_upsert``, ``item_retire``) takes the same path, one row at a time."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from businesses.models import Business
from catalogs.importers import FileRejected, ParsedRow, RowError, Source
from catalogs.importers.base import ColumnPlan, build_item
from catalogs.links import http_link
from catalogs.models import ITEM_TEXT_FIELDS, Import, Item, item_search_text
from catalogs.services.progress import ImportCounts, ImportProgress
from common.tasks import enqueue_on_commit

logger = logging.getLogger(__name__)

ITEM_CONTENT_FIELDS = (
    "item_group_id",
    "title",
    "description",
    "price",
    "sale_price",
    "currency",
    "availability",
    "brand",
    "category",
    "url",
    "image_url",
    "attributes",
    "variants",
)


def content_hash(fields: Mapping[str, Any]) -> str:
    payload = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in fields.items() if k != "external_id"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _text_of(fields: Mapping[str, Any]) -> str:
    return item_search_text(**{name: fields[name] for name in ITEM_TEXT_FIELDS})


def _flush_items(business: Business, batch: list[ParsedRow], counts: ImportCounts) -> None:
    ids = [row.fields["external_id"] for row in batch]
    # One array parameter rather than an IN list of 1,000: binding and planning stay cheap.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id, content_hash, is_active FROM catalogs_item "
            "WHERE business_id = %s AND external_id = ANY(%s)",
            [business.pk, ids],
        )
        existing = {eid: (h, active) for eid, h, active in cursor.fetchall()}
    hashes = {row.fields["external_id"]: content_hash(row.fields) for row in batch}
    changed_ids = [eid for eid in ids if eid in existing and existing[eid][0] != hashes[eid]]
    # For changed items, the text that was embedded before: equal text -> keep the vector.
    old_texts: dict[str, str] = {}
    if changed_ids:
        for values in Item.objects.filter(business=business, external_id__in=changed_ids).values(
            "external_id", *ITEM_TEXT_FIELDS, "embedding_model"
        ):
            old_texts[values["external_id"]] = _text_of(values) if values["embedding_model"] else ""
    now = timezone.now()
    staged: list[tuple[Any, ...]] = []
    reactivate: list[str] = []
    for row in batch:
        eid = row.fields["external_id"]
        previous = existing.get(eid)
        if previous is not None and previous[0] == hashes[eid]:
            if previous[1]:
                counts.unchanged += 1
            else:
                counts.updated += 1
                reactivate.append(eid)
            continue
        if previous is None:
            counts.created += 1
            reembed = True
        else:
            counts.updated += 1
            reembed = old_texts.get(eid) != _text_of(row.fields)
        f = row.fields
        staged.append(
            (
                eid,
                *(f[name] for name in STAGED_SCALARS),
                json.dumps(f["attributes"], ensure_ascii=False),
                json.dumps(f["variants"], ensure_ascii=False),
                hashes[eid],
                reembed,
            )
        )
    if staged:
        _upsert_staged(business, staged, now)
    if reactivate:
        Item.objects.filter(business=business, external_id__in=reactivate).update(
            is_active=True, updated_at=now
        )


# Written through COPY into a temporary table, then one INSERT ... ON CONFLICT per batch: building a
# 1,000-row multi-VALUES statement in Django and binding it client-side cost 4x the database's own time.
STAGED_JSON = ("attributes", "variants")
STAGED_SCALARS = tuple(name for name in ITEM_CONTENT_FIELDS if name not in STAGED_JSON)
STAGE_TABLE = "catalog_import_stage"
_STAGE_COLUMNS = ("external_id", *STAGED_SCALARS, "attributes", "variants", "content_hash", "reembed")
_UPSERT_SQL = f"""
INSERT INTO catalogs_item (business_id, external_id, {", ".join(STAGED_SCALARS)}, attributes, variants,
                           content_hash, is_active, embedding, embedding_model, created_at, updated_at)
SELECT %(business)s, external_id, {", ".join(STAGED_SCALARS)}, attributes, variants,
       content_hash, true, NULL, '', %(now)s, %(now)s
FROM {STAGE_TABLE} WHERE reembed = %(reembed)s
ON CONFLICT (business_id, external_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in STAGED_SCALARS)},
    attributes = EXCLUDED.attributes, variants = EXCLUDED.variants, content_hash = EXCLUDED.content_hash,
    is_active = true, updated_at = EXCLUDED.updated_at
"""


def _upsert_staged(business: Business, staged: list[tuple[Any, ...]], now: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} ("
            "external_id text, item_group_id text, title text, description text, price numeric, "
            "sale_price numeric, currency text, availability text, brand text, category text, url text, "
            "image_url text, attributes jsonb, variants jsonb, content_hash text, reembed boolean"
            ") ON COMMIT DROP"
        )
        cursor.execute(f"TRUNCATE {STAGE_TABLE}")
        with cursor.cursor.copy(f"COPY {STAGE_TABLE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN") as copy:
            for values in staged:
                copy.write_row(values)
        params = {"business": business.pk, "now": now}
        if any(values[-1] for values in staged):
            # New items and items whose embedded text changed: the vector is cleared, to be recomputed.
            cursor.execute(
                _UPSERT_SQL.rstrip() + ", embedding = NULL, embedding_model = ''", {**params, "reembed": True}
            )
        if not all(values[-1] for values in staged):
            # Price, stock or link changes: the row is rewritten, the vector stays.
            cursor.execute(_UPSERT_SQL, {**params, "reembed": False})


class RetireLimitExceeded(Exception):
    """A full sync would retire more of the active items than its import allows (``retire_limit_percent``):
    raised before anything is retired, so the transaction rolls back and the import is held."""

    def __init__(self, *, retiring: int, active: int, limit: int, counts: ImportCounts) -> None:
        share = retiring * 100 / active
        super().__init__(
            f"held: this file would retire {retiring:,} of the {active:,} active items ({share:.0f}%), more "
            f"than the limit of {limit}% (and create {counts.created:,}, update {counts.updated:,}); nothing "
            "was changed. Confirm it to apply it, or discard it."
        )


LINK_DROPPED = "not an http(s) link: dropped, the item imports without it"


def _drop_unsafe_links(row: ParsedRow, counts: ImportCounts) -> None:
    """Every importer's rows pass here before the COPY upsert (which skips URLField validation): a link that
    is not http(s) (catalogs/links.py) is emptied, and the row imports with a line in the report."""
    fields = row.fields
    for name in ("url", "image_url"):
        link = http_link(fields.get(name))
        if link is None:
            counts.warn(row.row_number, name, LINK_DROPPED)
        fields[name] = link or ""
    for variant in fields.get("variants") or []:
        if isinstance(variant, dict) and "image_url" in variant:
            link = http_link(variant["image_url"])
            if link is None:
                counts.warn(row.row_number, "variant_image_url", LINK_DROPPED)
            if link:
                variant["image_url"] = link
            else:
                del variant["image_url"]


def items_write(*, imp: Import, source: Source, progress: ImportProgress, counts: ImportCounts) -> None:
    """Upsert the file's product rows (a duplicate id is a report line); full mode then retires the active
    items the file did not mention, and refuses a file with no valid row."""
    business = imp.business
    batch_size = settings.CATALOG_IMPORT_BATCH_SIZE
    limit = imp.retire_limit_percent if imp.mode == Import.Mode.FULL else None
    # Counted before the writes: the catalog as the owner knows it, not counting what this file adds.
    active_before = Item.objects.filter(business=business, is_active=True).count() if limit is not None else 0
    # external_id -> the row it was first seen on. Grows with the number of distinct ids (~100 bytes each).
    seen: dict[str, int] = {}
    batch: list[ParsedRow] = []
    for result in source.results():
        counts.rows_done += 1
        if isinstance(result, RowError):
            counts.error(result.row_number, result.column, result.reason)
        elif isinstance(result, ParsedRow):
            eid = result.fields["external_id"]
            first = seen.get(eid)
            if first is not None:
                counts.error(result.row_number, "id", f"duplicate id {eid!r} (first on row {first})")
                continue
            seen[eid] = result.row_number
            _drop_unsafe_links(result, counts)
            batch.append(result)
            if len(batch) >= batch_size:
                _flush_items(business, batch, counts)
                batch = []
                progress.publish(Import.Phase.WRITING, counts.rows_done)
        else:
            counts.error(result.row_number, "", "a document chunk in a product feed")
    if batch:
        _flush_items(business, batch, counts)
    progress.publish(Import.Phase.WRITING, counts.rows_done, force=True)
    if imp.mode == Import.Mode.FULL:
        if not seen:
            # A full sync of a file with no valid row would retire the whole catalog: almost certainly a
            # broken export, never what the owner meant.
            raise FileRejected(
                "full sync refused: the file has no valid item, it would retire the whole catalog"
            )
        with connection.cursor() as cursor:
            if limit is not None and active_before:
                cursor.execute(
                    "SELECT count(*) FROM catalogs_item "
                    "WHERE business_id = %s AND is_active AND NOT (external_id = ANY(%s))",
                    [business.pk, list(seen)],
                )
                retiring = cursor.fetchone()[0]
                if retiring * 100 > limit * active_before:
                    raise RetireLimitExceeded(
                        retiring=retiring, active=active_before, limit=limit, counts=counts
                    )
            cursor.execute(
                "UPDATE catalogs_item SET is_active = false, updated_at = now() "
                "WHERE business_id = %s AND is_active AND NOT (external_id = ANY(%s))",
                [business.pk, list(seen)],
            )
            counts.retired = cursor.rowcount


# --- One item at a time (the REST API) -------------------------------------------------------------------------

ATTRIBUTE_COLUMN = "attribute:"


class ItemRejected(ValueError):
    """An item that cannot be stored: ``field`` names the input field, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class ItemUpserted:
    item: Item
    created: bool


def item_upsert(
    *, business: Business, external_id: str, fields: Mapping[str, str], attributes: Mapping[str, str]
) -> ItemUpserted:
    """Create or change the item ``external_id`` from canonical field values (as text, like a feed's cells)
    and attributes: the same row checks, content hash and vector reuse as an import's rows (one row, one
    short transaction), and a retired item comes back. Its vector is computed after the commit; a model that
    fails leaves it for the next import to embed. Raises ``ItemRejected`` and writes nothing for a bad row."""
    record = {"external_id": external_id, **fields}
    record.update({ATTRIBUTE_COLUMN + name: value for name, value in attributes.items()})
    plan = ColumnPlan(
        sources={name: name for name in (*fields, "external_id")},
        attributes={ATTRIBUTE_COLUMN + name: name for name in attributes},
    )
    parsed = build_item(record, plan, 1)
    if isinstance(parsed, RowError):
        raise ItemRejected(parsed.column, parsed.reason)
    for name in ("url", "image_url"):
        if http_link(parsed.fields[name]) is None:
            raise ItemRejected(name, "not an http(s) link or a path on this site")
    counts = ImportCounts()
    with transaction.atomic(durable=True):
        _flush_items(business, [parsed], counts)
        # The regression suite runs against the new data, as after an import (by name: regressions is above).
        enqueue_on_commit("regressions.tasks.after_import", business.pk, robust=True)
    item = Item.objects.get(business=business, external_id=parsed.fields["external_id"])
    if item.embedding is None:
        _embed_one(item)
    return ItemUpserted(item=item, created=counts.created == 1)


def _embed_one(item: Item) -> None:
    from catalogs.embeddings import get_backend

    try:
        backend = get_backend()
        [vector] = backend.embed([item.search_text()])
    except Exception:
        logger.warning("item %s stored without a vector: embedding failed", item.pk, exc_info=True)
        return
    item.embedding, item.embedding_model = vector, backend.name
    item.save(update_fields=["embedding", "embedding_model"])


def item_retire(*, business: Business, external_id: str) -> Item | None:
    """Retire the item (the agent stops offering it; an upsert brings it back). None for an unknown id;
    retiring a retired item changes nothing."""
    with transaction.atomic(durable=True):
        item = Item.objects.select_for_update().filter(business=business, external_id=external_id).first()
        if item is not None and item.is_active:
            item.is_active = False
            item.save(update_fields=["is_active", "updated_at"])
            enqueue_on_commit("regressions.tasks.after_import", business.pk, robust=True)
    return item
