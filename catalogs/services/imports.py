"""Catalog imports: start one, run it, embed what changed, purge old uploads.

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

Step 1 writes through ``items`` (product feeds) or ``documents`` (FAQ, policies, pages); progress while it
runs goes to Redis and a Channels group (``progress``: the ``Import`` row cannot show it before the commit).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypedDict, TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from businesses.models import Business
from catalogs.importers import FileRejected, gunzipped, open_source
from catalogs.importers import normalize_format as _normalize_format
from catalogs.models import Chunk, Document, FeedSource, Import, Item
from catalogs.services.documents import document_write
from catalogs.services.items import RetireLimitExceeded, items_write
from catalogs.services.progress import ImportCounts, ImportProgress, ProgressCallback
from common import metrics
from common.safe_fetch import FetchRefused, check_url, fetch
from common.tasks import enqueue_on_commit
from outbox.emit import event_emit
from outbox.models import EventType

if TYPE_CHECKING:
    from catalogs.embeddings import EmbeddingBackend

logger = logging.getLogger(__name__)


# Advisory lock keys of imports: this offset plus the business id (other locks use other offsets).
IMPORT_LOCK_NAMESPACE = 0x1A7A_0000_0000


class ImportRejected(Exception):
    """The upload is refused before anything is stored (too big, unknown format or mode, a refused URL)."""


@dataclass(frozen=True, slots=True)
class FetchedFrom:
    """Where a file that was fetched came from, and what the server said about it (a feed's run)."""

    url: str
    etag: str = ""
    last_modified: str = ""
    sha256: str = ""


def url_filename(url: str) -> str:
    """The name a fetched file goes by (format detection reads its extension): the URL's last path segment,
    else its host."""
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    name = path.rsplit("/", 1)[-1] if path.count("/") > 2 else ""
    return Path(name).name[:200] or "download"


def import_start(
    *,
    business: Business,
    upload: IO[bytes] | File[bytes] | None = None,
    path: Path | str | None = None,
    url: str | None = None,
    filename: str | None = None,
    mode: str = Import.Mode.UPSERT,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    sheet: str = "",
    embed: bool = True,
    enqueue: bool = True,
    fetched_from: FetchedFrom | None = None,
    feed: FeedSource | None = None,
    retire_limit_percent: int | None = None,
) -> Import:
    """Store the file (an uploaded file object, or a path on disk) and create a pending ``Import``; or, given
    a ``url``, create one that fetches its file when it runs (``common.safe_fetch``).

    With ``enqueue`` the Celery task is queued once the row has committed; the command line passes
    ``enqueue=False`` and calls ``import_run`` itself. Raises ``ImportRejected`` (and stores nothing) for a
    file over ``CATALOG_MAX_UPLOAD_BYTES``, an unknown format or an unknown mode, or a URL the fetch rule
    refuses. ``fetched_from`` records where a file given by ``path`` was fetched (a feed's run, ``feed``);
    ``retire_limit_percent`` holds a full sync that would retire more than that share of the active items.
    """
    if sum(source is not None for source in (upload, path, url)) != 1:
        raise ValueError("give exactly one of upload, path or url")
    if mode not in Import.Mode.values:
        raise ImportRejected(f"unknown mode {mode!r} (upsert or full)")
    try:
        requested_format = _normalize_format(format) or ""
    except FileRejected as exc:
        raise ImportRejected(str(exc)) from exc
    if url is not None:
        try:
            check_url(url)
        except FetchRefused as exc:
            raise ImportRejected(str(exc)) from exc
        fetched_from = FetchedFrom(url=url)
    limit = settings.CATALOG_MAX_UPLOAD_BYTES
    size: int | None
    path = Path(path) if path is not None else None
    if url is not None:
        size, name = None, filename or url_filename(url)
    elif path is not None:
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
    if size is not None and size > limit:
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
            feed=feed,
            retire_limit_percent=retire_limit_percent,
        )
        if fetched_from is not None:
            imp.source_url, imp.source_etag = fetched_from.url, fetched_from.etag
            imp.source_last_modified, imp.source_sha256 = fetched_from.last_modified, fetched_from.sha256
        # From a url the file is fetched when the import runs (import_run), on a worker.
        if path is not None:
            with path.open("rb") as fh:
                imp.file.save(name, File(fh), save=False)
        elif upload is not None:
            imp.file.save(name, upload if isinstance(upload, File) else File(upload), save=False)
        imp.save()
        if enqueue:
            enqueue_on_commit("catalogs.tasks.run_import", imp.pk)
    return imp


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


def _embed_pending(imp: Import, progress: ImportProgress) -> int:
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
    progress.phase(Import.Phase.EMBEDDING, total)
    done = _embed_rows(Item, item_ids, backend, progress, done=0)
    done = _embed_rows(Chunk, chunk_ids, backend, progress, done=done)
    progress.publish(Import.Phase.EMBEDDING, done, force=True)
    return done


_Row = TypeVar("_Row", Item, Chunk)


def _embed_rows(
    model: type[_Row], ids: list[int], backend: EmbeddingBackend, progress: ImportProgress, *, done: int
) -> int:
    """Embed these rows in batches; returns ``done`` plus how many were embedded."""
    batch_size = settings.CATALOG_EMBED_BATCH_SIZE
    for start in range(0, len(ids), batch_size):
        rows = list(model.objects.filter(pk__in=ids[start : start + batch_size]).order_by("pk"))
        vectors = backend.embed([row.search_text() for row in rows])
        for row, vector in zip(rows, vectors, strict=True):
            row.embedding, row.embedding_model = vector, backend.name
        # A short transaction per batch: the model call above ran with no transaction open.
        model.objects.bulk_update(rows, ["embedding", "embedding_model"])
        done += len(rows)
        progress.publish(Import.Phase.EMBEDDING, done)
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


def _import_finished(imp: Import) -> None:
    """The webhook event of a finished import, in the transaction that records its end (outbox.emit), and
    the process's count of it."""
    metrics.IMPORTS.labels(imp.state).inc()
    event_emit(
        business_id=imp.business_id,
        type=EventType.IMPORT_FINISHED,
        data={
            "import_id": imp.pk,
            "state": imp.state,
            "mode": imp.mode,
            "original_filename": imp.original_filename,
            "created": imp.created_count,
            "updated": imp.updated_count,
            "unchanged": imp.unchanged_count,
            "retired": imp.retired_count,
            "failed": imp.failed_count,
            "error": imp.error_message,
        },
    )


def _fail(imp: Import, message: str, timings: dict[str, float], *, state: str = Import.State.FAILED) -> None:
    imp.state = state
    imp.phase = Import.Phase.DONE
    imp.error_message = message
    imp.finished_at = timezone.now()
    imp.timings = timings
    with transaction.atomic():
        imp.save(update_fields=["state", "phase", "error_message", "finished_at", "timings", "format"])
        _import_finished(imp)


def _fetch_file(imp: Import) -> None:
    """An import from a URL: fetch it (``common.safe_fetch``: the SSRF rule, size and time limits) into the
    import's file. Nothing is stored when the fetch is refused (``FileRejected``)."""
    with tempfile.TemporaryFile() as tmp:
        try:
            fetched = fetch(imp.source_url, tmp, max_bytes=settings.CATALOG_MAX_UPLOAD_BYTES)
        except FetchRefused as exc:
            raise FileRejected(str(exc)) from exc
        if fetched.size == 0:
            raise FileRejected(f"{imp.source_url} answered with an empty body")
        tmp.seek(0)
        imp.source_etag, imp.source_last_modified = fetched.etag, fetched.last_modified
        imp.file.save(imp.original_filename, File(tmp), save=False)
    imp.save(update_fields=["file", "source_etag", "source_last_modified"])


def import_run(*, import_id: int, progress: ProgressCallback | None = None) -> Import | None:
    """Run a pending import (or take over one whose lease expired); a finished or running one is left alone.

    Returns the ``Import`` as it ended, or ``None`` when the row is gone. A file rejected as a whole ends
    ``failed`` with ``error_message`` and no catalog change; bad rows end in ``error_report`` while the
    good rows import (``succeeded``).
    """
    if not _claim(import_id):
        return Import.objects.filter(pk=import_id).first()
    imp = Import.objects.select_related("business").get(pk=import_id)
    reporter = ImportProgress(imp, progress)
    started = time.monotonic()
    timings: dict[str, float] = {}
    counts = ImportCounts()
    stack = ExitStack()  # holds the unpacked copy of a .gz upload until the import ends
    try:
        if not imp.file and imp.source_url:
            _fetch_file(imp)
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
        if imp.feed_id is not None and source.kind != "items":
            # A feed's URL that now serves a text page (an error page, a login wall) is not a FAQ to add.
            raise FileRejected(f"a feed must serve products (CSV, TSV, XML or JSON), not {source.format}")
        reporter.phase(Import.Phase.WRITING, _estimate_rows(path, source.format))
        with transaction.atomic(durable=True):
            with connection.cursor() as cursor:
                # One import per business at a time; other businesses' imports run in parallel.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK_NAMESPACE + imp.business_id])
            if source.kind == "items":
                items_write(imp=imp, source=source, progress=reporter, counts=counts)
            else:
                document_write(imp=imp, source=source, progress=reporter, counts=counts)
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
    except RetireLimitExceeded as exc:
        # Rolled back like a rejected file; the file stays for the owner to confirm (feeds.feed_import_confirm).
        timings["total"] = round(time.monotonic() - started, 3)
        _fail(imp, str(exc), timings, state=Import.State.HELD)
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
    with transaction.atomic():
        imp.save(update_fields=["state", "phase", "finished_at", "timings", "embedded_count"])
        _import_finished(imp)
    # Only a succeeded import's rows: a failed one changed nothing.
    for result, rows in (
        ("created", counts.created),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
        ("retired", counts.retired),
        ("failed", counts.failed),
    ):
        metrics.IMPORT_ROWS.labels(result).inc(rows)
    # The business's regression suite runs against the new data (regressions/, by name: catalogs sits below
    # it). The task returns at once for a business without a suite; a broker that is down costs the import
    # nothing but that run (logged).
    enqueue_on_commit("regressions.tasks.after_import", imp.business_id, robust=True)
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


class DocumentText(TypedDict):
    title: str
    text: str
    format: Literal["markdown", "text"]
    kind: str  # a Document.Kind


@dataclass(frozen=True)
class DocumentImported:
    imp: Import
    document: Document | None  # None: the import failed (``imp.error_message`` says why)
    created: bool  # False: a document of that title was replaced


def document_import_text(*, business: Business, document: DocumentText) -> DocumentImported:
    """Make (or replace: the same title names the same document) a document from text, in this process, through
    the import pipeline (an ``Import`` in the history, chunks, vectors)."""
    # One file name per title, whatever the format (given to the importer explicitly): a document is known
    # by its file name, so the same title replaces it.
    filename = f"{slugify(document['title'])[:80] or 'document'}.md"
    existed = Document.objects.filter(business=business, filename=filename).exists()
    imp = import_start(
        business=business,
        upload=ContentFile(document["text"].encode(), name=filename),
        filename=filename,
        format=document["format"],
        enqueue=False,
    )
    finished = import_run(import_id=imp.pk)
    assert finished is not None
    if finished.state != Import.State.SUCCEEDED:
        return DocumentImported(imp=finished, document=None, created=False)
    stored = Document.objects.get(business=business, filename=filename)
    stored.title, stored.kind = document["title"], document["kind"]
    stored.save(update_fields=["title", "kind", "updated_at"])
    return DocumentImported(imp=finished, document=stored, created=not existed)


def import_uploads_purge(*, now: datetime | None = None) -> int:
    """Delete the uploaded files of imports that finished more than CATALOG_UPLOAD_RETENTION_DAYS ago; the
    ``Import`` rows keep their counts, error report and timings. Returns how many files were deleted. A
    pending, running or held import keeps its file whatever its age."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CATALOG_UPLOAD_RETENTION_DAYS)
    done = 0
    stale = (
        Import.objects.filter(
            state__in=[Import.State.SUCCEEDED, Import.State.FAILED, Import.State.DISCARDED],
            finished_at__lt=cutoff,
        )
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
