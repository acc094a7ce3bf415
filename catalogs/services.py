"""Writes of the catalog: start an import, run it, embed what changed.

An import runs in three steps:

1. **read + validate + write**, in ONE transaction (with a per-business advisory lock, so that two imports of
   one business never interleave). Rows are streamed from the importer, checked, and upserted in batches
   keyed by ``(business, external_id)``; a content hash decides created / updated / unchanged. Full mode
   then retires the active items the file did not mention. Until this transaction commits, every reader
   (retrieval, the agent) sees the previous catalog; a file rejected half-way rolls everything back.
2. **embed**, outside that transaction (never hold a transaction across a model call): the business's active
   items (and chunks) that have no vector are embedded in batches, each batch written in its own short
   transaction. An item whose embedded text did not change (a price or stock update) keeps its vector, so
   re-importing an unchanged file, or a daily price feed, embeds nothing.
3. the final state, counts and timings are saved on the ``Import`` row.

Progress while step 1 runs cannot be written to the ``Import`` row (the row update would sit inside the
uncommitted transaction), so it goes to Redis (``catalogs:import:<id>:progress``, read by
``selectors.import_status``) and to the Channels group ``import.<id>`` as ``import.progress`` events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import IO, Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files import File
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from businesses.models import Business
from catalogs.importers import FileRejected, ParsedChunk, ParsedRow, RowError, Source, gunzipped, open_source
from catalogs.importers import normalize_format as _normalize_format
from catalogs.links import http_link
from catalogs.models import Chunk, Document, Import, Item, item_search_text
from common.tasks import enqueue_on_commit

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 10_000
PROGRESS_INTERVAL = 0.5  # seconds between progress publications
PROGRESS_TTL = 24 * 3600
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
# Advisory lock keys of imports: this offset plus the business id (other locks use other offsets).
IMPORT_LOCK_NAMESPACE = 0x1A7A_0000_0000
ProgressCallback = Callable[[str, int, int], None]


class ImportRejected(Exception):
    """The upload is refused before anything is stored (too big, unknown format or mode)."""


def import_group(import_id: int) -> str:
    """The Channels group that receives ``import.progress`` events of one import."""
    return f"import.{import_id}"


def progress_key(import_id: int) -> str:
    return f"catalogs:import:{import_id}:progress"


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def import_start(
    *,
    business: Business,
    upload: IO[bytes] | File | None = None,
    path: Path | str | None = None,
    filename: str | None = None,
    mode: str = Import.Mode.UPSERT,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    sheet: str = "",
    embed: bool = True,
    enqueue: bool = True,
) -> Import:
    """Store the file (an uploaded file object, or a path on disk) and create a pending ``Import``.

    With ``enqueue`` the Celery task is queued once the row has committed; the command line passes
    ``enqueue=False`` and calls ``import_run`` itself. Raises ``ImportRejected`` (and stores nothing) for a
    file over ``CATALOG_MAX_UPLOAD_BYTES``, an unknown format or an unknown mode.
    """
    if (upload is None) == (path is None):
        raise ValueError("give exactly one of upload or path")
    if mode not in Import.Mode.values:
        raise ImportRejected(f"unknown mode {mode!r} (upsert or full)")
    try:
        requested_format = _normalize_format(format) or ""
    except FileRejected as exc:
        raise ImportRejected(str(exc)) from exc
    limit = settings.CATALOG_MAX_UPLOAD_BYTES
    size: int | None
    if path is not None:
        path = Path(path)
        size = path.stat().st_size
        name = filename or path.name
    else:
        assert upload is not None
        size = getattr(upload, "size", None)
        if size is None:
            upload.seek(0, 2)
            size = upload.tell()
            upload.seek(0)
        name = filename or Path(getattr(upload, "name", "") or "upload").name
    if size > limit:
        raise ImportRejected(f"the file is {size:,} bytes, over the limit of {limit:,} bytes")
    if size == 0:
        raise ImportRejected("the file is empty")
    name = Path(name).name[:200] or "upload"
    with transaction.atomic(durable=True):
        imp = Import(
            business=business,
            original_filename=name,
            requested_format=requested_format,
            mode=mode,
            mapping=dict(mapping or {}),
            sheet=sheet,
            embed=embed,
        )
        if path is not None:
            with path.open("rb") as fh:
                imp.file.save(name, File(fh), save=False)
        else:
            assert upload is not None
            imp.file.save(name, upload if isinstance(upload, File) else File(upload), save=False)
        imp.save()
        if enqueue:
            enqueue_on_commit("catalogs.tasks.run_import", imp.pk)
    return imp


@dataclass
class _Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    failed: int = 0
    rows_done: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, row: int, column: str, reason: str) -> None:
        self.failed += 1
        self.warn(row, column, reason)

    def warn(self, row: int, column: str, reason: str) -> None:
        """A report line for a row that still imports (it is not counted as failed)."""
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"row": row, "column": column, "reason": reason})


class _Progress:
    """Publishes progress at most every ``PROGRESS_INTERVAL`` seconds (Redis hash + Channels group)."""

    def __init__(self, imp: Import, callback: ProgressCallback | None) -> None:
        self.imp = imp
        self.callback = callback
        self.started = time.monotonic()
        self.last = 0.0
        self.total = 0
        self.phase_started = self.started

    def phase(self, phase: str, total: int) -> None:
        self.total = total
        self.phase_started = time.monotonic()
        self.publish(phase, 0, force=True)

    def publish(self, phase: str, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        total = max(self.total, done)
        elapsed = now - self.phase_started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total else None
        event = {
            "import_id": self.imp.pk,
            "phase": phase,
            "rows_done": done,
            "rows_total": total,
            "rate": round(rate, 1),
            "eta": round(eta, 1) if eta is not None else None,
        }
        if self.callback is not None:
            self.callback(phase, done, total)
        try:
            client = redis_client()
            client.set(progress_key(self.imp.pk), json.dumps(event), ex=PROGRESS_TTL)
            layer = get_channel_layer()
            if layer is not None:
                async_to_sync(layer.group_send)(
                    import_group(self.imp.pk), {"type": "import.progress", **event}
                )
        except Exception:  # progress is best effort: never fail an import because Redis hiccuped
            logger.warning("import %s: progress not published", self.imp.pk, exc_info=True)


def content_hash(fields: Mapping[str, Any]) -> str:
    payload = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in fields.items() if k != "external_id"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _text_of(fields: Mapping[str, Any]) -> str:
    return item_search_text(
        title=fields["title"],
        brand=fields["brand"],
        category=fields["category"],
        description=fields["description"],
        attributes=fields["attributes"],
        variants=fields["variants"],
    )


def _estimate_rows(path: Path, fmt: str) -> int:
    """Rows in the file, for the progress bar (newlines or item tags, counted at disk speed)."""
    needles = {"csv": b"\n", "tsv": b"\n", "jsonl": b"\n", "xml": b"<item", "json": b"},"}
    needle = needles.get(fmt)
    if needle is None:
        return 0
    count = 0
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += (tail + chunk).count(needle) - tail.count(needle)
            tail = chunk[-len(needle) :]
    if fmt == "xml" and count == 0:
        count = path.read_bytes().count(b"<entry") if path.stat().st_size < 64 << 20 else 0
    if fmt in ("csv", "tsv"):
        with path.open("rb") as f:
            head = f.read(64 * 1024).lstrip(b"\xef\xbb\xbf").splitlines()
        # The header and the template's leading "# Required | ..." rows are not items.
        count -= 1 + sum(1 for line in head[:20] if line.lstrip(b'"').startswith(b"#"))
    return max(count, 0) + (1 if fmt == "json" else 0)


def _flush_items(business: Business, batch: list[ParsedRow], counts: _Counts) -> None:
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
            "external_id",
            "title",
            "brand",
            "category",
            "description",
            "attributes",
            "variants",
            "embedding_model",
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


LINK_DROPPED = "not an http(s) link: dropped, the item imports without it"


def _drop_unsafe_links(row: ParsedRow, counts: _Counts) -> None:
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


def _write_items(imp: Import, source: Source, progress: _Progress, counts: _Counts) -> None:
    business = imp.business
    batch_size = settings.CATALOG_IMPORT_BATCH_SIZE
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
            cursor.execute(
                "UPDATE catalogs_item SET is_active = false, updated_at = now() "
                "WHERE business_id = %s AND is_active AND NOT (external_id = ANY(%s))",
                [business.pk, list(seen)],
            )
            counts.retired = cursor.rowcount


def _document_kind(filename: str, faq_table: bool) -> str:
    name = filename.lower()
    if faq_table or "faq" in name or "question" in name:
        return Document.Kind.FAQ
    if any(word in name for word in ("polic", "return", "shipping", "terms", "privacy", "warrant", "refund")):
        return Document.Kind.POLICY
    return Document.Kind.PAGE


DOCUMENT_BATCH = 500


def _write_document(imp: Import, source: Source, progress: _Progress, counts: _Counts) -> None:
    """Replace the document's chunks with the file's, streaming: chunks are written in batches as they are
    read (memory holds one batch, not the document), and a chunk whose text did not change gets its old
    vector back in SQL (``_OLD_VECTORS``), never through Python."""
    business = imp.business
    document, _ = Document.objects.update_or_create(
        business=business,
        filename=imp.original_filename,
        defaults={
            "kind": _document_kind(imp.original_filename, source.format in ("csv", "tsv", "xlsx")),
            "is_active": True,
        },
    )
    old_hashes = set(document.chunks.values_list("content_hash", flat=True))
    chunk_table = Chunk._meta.db_table
    with connection.cursor() as cursor:
        # The old vectors wait in a temporary table (dropped at commit) while the old chunks make way.
        cursor.execute(
            f"CREATE TEMPORARY TABLE {_OLD_VECTORS} ON COMMIT DROP AS "
            f"SELECT DISTINCT ON (content_hash) content_hash, embedding, embedding_model FROM {chunk_table} "
            "WHERE document_id = %s AND embedding IS NOT NULL",
            [document.pk],
        )
    document.chunks.all().delete()
    new_hashes: set[str] = set()
    title = ""
    ordinal = 0
    rows: list[Chunk] = []
    for result in source.results():
        counts.rows_done += 1
        if isinstance(result, RowError):
            counts.error(result.row_number, result.column, result.reason)
        elif isinstance(result, ParsedChunk):
            if not title and result.heading:
                title = result.heading.split(" > ")[0]
            digest = hashlib.sha256(f"{result.heading}\n{result.text}".encode()).hexdigest()
            if digest in old_hashes:
                counts.unchanged += 1
            else:
                counts.created += 1
            new_hashes.add(digest)
            rows.append(
                Chunk(
                    business=business,
                    document=document,
                    ordinal=ordinal,
                    heading=result.heading,
                    text=result.text,
                    content_hash=digest,
                )
            )
            ordinal += 1
            if len(rows) >= DOCUMENT_BATCH:
                Chunk.objects.bulk_create(rows)
                rows = []
        progress.publish(Import.Phase.WRITING, counts.rows_done)
    if rows:
        Chunk.objects.bulk_create(rows)
    if not ordinal:
        raise FileRejected("the document holds no text")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {chunk_table} AS c SET embedding = o.embedding, embedding_model = o.embedding_model "
            f"FROM {_OLD_VECTORS} AS o WHERE c.document_id = %s AND c.content_hash = o.content_hash",
            [document.pk],
        )
        cursor.execute(f"DROP TABLE {_OLD_VECTORS}")
    counts.retired = len(old_hashes - new_hashes)
    document.title = (title or Path(imp.original_filename).stem)[:300]
    document.save(update_fields=["title"])


_OLD_VECTORS = "catalog_import_old_vectors"


def _embed_pending(imp: Import, progress: _Progress) -> int:
    """Embed the business's active items and chunks that have no vector; returns how many were embedded."""
    from catalogs.embeddings import get_backend

    business = imp.business
    item_ids = list(
        Item.objects.filter(business=business, is_active=True, embedding__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    chunk_ids = list(
        Chunk.objects.filter(business=business, embedding__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    total = len(item_ids) + len(chunk_ids)
    if not total:
        return 0
    backend = get_backend()
    batch_size = settings.CATALOG_EMBED_BATCH_SIZE
    progress.phase(Import.Phase.EMBEDDING, total)
    done = 0
    for start in range(0, len(item_ids), batch_size):
        items = list(Item.objects.filter(pk__in=item_ids[start : start + batch_size]).order_by("pk"))
        vectors = backend.embed([item.search_text() for item in items])
        for item, vector in zip(items, vectors, strict=True):
            item.embedding, item.embedding_model = vector, backend.name
        # A short transaction per batch: the model call above ran with no transaction open.
        Item.objects.bulk_update(items, ["embedding", "embedding_model"])
        done += len(items)
        progress.publish(Import.Phase.EMBEDDING, done)
    for start in range(0, len(chunk_ids), batch_size):
        chunks = list(Chunk.objects.filter(pk__in=chunk_ids[start : start + batch_size]).order_by("pk"))
        vectors = backend.embed([chunk.search_text() for chunk in chunks])
        for chunk, vector in zip(chunks, vectors, strict=True):
            chunk.embedding, chunk.embedding_model = vector, backend.name
        Chunk.objects.bulk_update(chunks, ["embedding", "embedding_model"])
        done += len(chunks)
        progress.publish(Import.Phase.EMBEDDING, done)
    progress.publish(Import.Phase.EMBEDDING, done, force=True)
    return done


def _claim(import_id: int) -> bool:
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.CATALOG_IMPORT_LEASE_SECONDS)
    return (
        Import.objects.filter(pk=import_id)
        .filter(Q(state=Import.State.PENDING) | Q(state=Import.State.RUNNING, claimed_at__lt=lease_expired))
        .update(state=Import.State.RUNNING, phase=Import.Phase.READING, claimed_at=now, started_at=now)
        == 1
    )


def _fail(imp: Import, message: str, timings: dict[str, float]) -> None:
    imp.state = Import.State.FAILED
    imp.phase = Import.Phase.DONE
    imp.error_message = message
    imp.finished_at = timezone.now()
    imp.timings = timings
    imp.save(update_fields=["state", "phase", "error_message", "finished_at", "timings", "format"])


def import_run(*, import_id: int, progress: ProgressCallback | None = None) -> Import | None:
    """Run a pending import (or take over one whose lease expired); a finished or running one is left alone.

    Returns the ``Import`` as it ended, or ``None`` when the row is gone. A file rejected as a whole ends
    ``failed`` with ``error_message`` and no catalog change; bad rows end in ``error_report`` while the
    good rows import (``succeeded``).
    """
    if not _claim(import_id):
        return Import.objects.filter(pk=import_id).first()
    imp = Import.objects.select_related("business").get(pk=import_id)
    reporter = _Progress(imp, progress)
    started = time.monotonic()
    timings: dict[str, float] = {}
    counts = _Counts()
    stack = ExitStack()  # holds the unpacked copy of a .gz upload until the import ends
    try:
        if not imp.file:
            raise FileRejected("the uploaded file is gone (deleted after CATALOG_UPLOAD_RETENTION_DAYS)")
        path = Path(imp.file.path)
        if path.stat().st_size > settings.CATALOG_MAX_UPLOAD_BYTES:
            raise FileRejected(f"the file is over the limit of {settings.CATALOG_MAX_UPLOAD_BYTES:,} bytes")
        unpacked = stack.enter_context(
            gunzipped(path, imp.original_filename, limit=settings.CATALOG_MAX_UPLOAD_BYTES)
        )
        path, filename = unpacked
        source = open_source(
            path,
            filename=filename,
            format=imp.requested_format or None,
            mapping=imp.mapping,
            sheet=imp.sheet or None,
        )
        imp.format = source.format
        reporter.phase(Import.Phase.WRITING, _estimate_rows(path, source.format))
        with transaction.atomic(durable=True):
            with connection.cursor() as cursor:
                # One import per business at a time; other businesses' imports run in parallel.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK_NAMESPACE + imp.business_id])
            if source.kind == "items":
                _write_items(imp, source, reporter, counts)
            else:
                _write_document(imp, source, reporter, counts)
            timings["write"] = round(time.monotonic() - started, 3)
            # Counts commit with the catalog: a crash during embedding leaves them right, and a takeover
            # (after the lease) finds the items unchanged and only finishes the embedding.
            imp.rows_total = imp.rows_done = counts.rows_done
            imp.created_count, imp.updated_count = counts.created, counts.updated
            imp.unchanged_count, imp.retired_count = counts.unchanged, counts.retired
            imp.failed_count, imp.error_report = counts.failed, counts.errors
            imp.phase = Import.Phase.EMBEDDING if imp.embed else Import.Phase.DONE
            imp.timings = timings
            imp.save()
    except FileRejected as exc:
        timings["total"] = round(time.monotonic() - started, 3)
        _fail(imp, str(exc), timings)
        reporter.publish(Import.Phase.DONE, 0, force=True)
        return imp
    except BaseException as exc:
        # Also KeyboardInterrupt / SIGTERM from the command: the transaction rolled back, say so on the row
        # rather than leave it "running" until the lease expires.
        timings["total"] = round(time.monotonic() - started, 3)
        what = "interrupted" if not isinstance(exc, Exception) else f"internal error ({type(exc).__name__})"
        _fail(imp, f"{what}; the catalog was not changed", timings)
        reporter.publish(Import.Phase.DONE, 0, force=True)
        raise
    finally:
        stack.close()
    if imp.embed:
        embed_started = time.monotonic()
        try:
            imp.embedded_count = _embed_pending(imp, reporter)
        except BaseException as exc:
            # The items are committed; only vectors are missing. The next import (or a re-run) embeds them.
            timings["total"] = round(time.monotonic() - started, 3)
            reason = "interrupted" if not isinstance(exc, Exception) else f"{type(exc).__name__}: {exc}"[:300]
            _fail(
                imp, f"the items were imported but embedding failed ({reason}); re-run to embed them", timings
            )
            reporter.publish(Import.Phase.DONE, counts.rows_done, force=True)
            raise
        timings["embed"] = round(time.monotonic() - embed_started, 3)
    timings["total"] = round(time.monotonic() - started, 3)
    imp.state = Import.State.SUCCEEDED
    imp.phase = Import.Phase.DONE
    imp.finished_at = timezone.now()
    imp.timings = timings
    imp.save(update_fields=["state", "phase", "finished_at", "timings", "embedded_count"])
    reporter.total = counts.rows_done
    reporter.publish(Import.Phase.DONE, counts.rows_done, force=True)
    return imp


def import_file(
    *,
    business: Business,
    path: Path | str,
    mode: str = Import.Mode.UPSERT,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    sheet: str = "",
    embed: bool = True,
    progress: ProgressCallback | None = None,
) -> Import:
    """Start and run an import in this process (the command line, seeding, tests): ``import_start`` then
    ``import_run``. Raises ``ImportRejected`` for a refused upload; a rejected file returns a failed Import."""
    imp = import_start(
        business=business,
        path=path,
        mode=mode,
        format=format,
        mapping=mapping,
        sheet=sheet,
        embed=embed,
        enqueue=False,
    )
    result = import_run(import_id=imp.pk, progress=progress)
    assert result is not None
    return result


def import_uploads_purge(*, now: datetime | None = None) -> int:
    """Delete the uploaded files of imports that finished more than CATALOG_UPLOAD_RETENTION_DAYS ago; the
    ``Import`` rows keep their counts, error report and timings. Returns how many files were deleted. A
    pending or running import keeps its file whatever its age."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CATALOG_UPLOAD_RETENTION_DAYS)
    done = 0
    stale = (
        Import.objects.filter(state__in=[Import.State.SUCCEEDED, Import.State.FAILED], finished_at__lt=cutoff)
        .exclude(file="")
        .only("pk", "file")
    )
    for imp in stale.iterator(chunk_size=500):
        name = imp.file.name or ""
        # The row first: an import run again after this finds no file and fails cleanly; a crash between the
        # two leaves an orphan file, not a row pointing at nothing.
        if Import.objects.filter(pk=imp.pk).exclude(file="").update(file="") == 1:
            imp.file.storage.delete(name)
            done += 1
    if done:
        logger.info(
            "deleted %d catalog uploads older than %d days", done, settings.CATALOG_UPLOAD_RETENTION_DAYS
        )
    return done
