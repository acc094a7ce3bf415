"""An import's document (FAQ, policy or page): its chunks are replaced with the file's, and a chunk whose
text did not change gets its old vector back. Runs inside the import's transaction (``imports.import_run``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.db import connection, transaction

from businesses.models import Business
from catalogs.importers import FileRejected, ParsedChunk, RowError, Source
from catalogs.models import Chunk, Document, Import
from catalogs.services.progress import ImportCounts, ImportProgress


def _document_kind(filename: str, faq_table: bool) -> str:
    name = filename.lower()
    if faq_table or "faq" in name or "question" in name:
        return Document.Kind.FAQ
    if any(word in name for word in ("polic", "return", "shipping", "terms", "privacy", "warrant", "refund")):
        return Document.Kind.POLICY
    return Document.Kind.PAGE


DOCUMENT_BATCH = 500
_OLD_VECTORS = "catalog_import_old_vectors"


def document_write(*, imp: Import, source: Source, progress: ImportProgress, counts: ImportCounts) -> None:
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


def document_delete(*, business: Business, document_id: int) -> bool:
    """Remove the document and its chunks: the agent stops quoting it at once. False for an unknown id."""
    with transaction.atomic(durable=True):
        deleted, _ = Document.objects.filter(business=business, pk=document_id).delete()
    return deleted > 0
