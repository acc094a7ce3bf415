"""One tenant cannot deny ingest to all: bounded memory for every format, hostile files refused cleanly with
nothing stored, uploads deleted after the retention period, and a per-business share of the ingest workers.

Peak memory on the big files (a 2 GB shared-strings XLSX, a 200 MB JSON feed) is measured by
``bench/ingest_memory.py`` (docs/benchmarks.md); here the limits and their refusals, with small settings.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from celery.exceptions import Retry
from django.core.files.base import ContentFile
from django.utils import timezone

from catalogs import slots
from catalogs.models import Chunk, Document, Import, Item
from catalogs.services.imports import import_uploads_purge
from catalogs.tasks import run_import
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stocked(import_catalog: Any) -> Any:
    """A business that already has the small catalog (3 active items)."""
    business = BusinessFactory()
    assert import_catalog(business, SMALL_CATALOG_CSV).created_count == 3
    return business


def snapshot(business: Any) -> list[tuple[Any, ...]]:
    return sorted(
        Item.objects.filter(business=business).values_list(
            "external_id", "title", "is_active", "content_hash"
        )
    )


def assert_rejected(imp: Import, message: str) -> None:
    assert (imp.state, imp.phase, imp.error_message) == ("failed", "done", message)
    assert (imp.created_count, imp.updated_count, imp.retired_count) == (0, 0, 0)


MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def xlsx(rows: list[list[str]], *, doctype: str = "") -> bytes:
    """A minimal workbook whose cells are shared strings (as Excel writes them; openpyxl writes inline ones)."""
    strings: list[str] = []
    cells = []
    for r, row in enumerate(rows, start=1):
        refs = []
        for c, value in enumerate(row):
            strings.append(value)
            refs.append(f'<c r="{chr(65 + c)}{r}" t="s"><v>{len(strings) - 1}</v></c>')
        cells.append(f'<row r="{r}">{"".join(refs)}</row>')
    shared = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
    members = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{RELS}"><Relationship Id="rId1" '
            f'Type="{DOC_RELS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{DOC_RELS}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{RELS}">'
            f'<Relationship Id="rId1" Type="{DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{DOC_RELS}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{MAIN}"><sheetData>{"".join(cells)}</sheetData></worksheet>',
        "xl/sharedStrings.xml": (
            f'{doctype}<sst xmlns="{MAIN}" count="{len(strings)}" uniqueCount="{len(strings)}">{shared}</sst>'
        ),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return out.getvalue()


# --- XLSX ------------------------------------------------------------------------------------------------------


def test_xlsx_whose_shared_strings_inflate_past_the_cap_is_refused_unopened(
    stocked: Any, import_catalog: Any, settings: Any
) -> None:
    # Unique strings compress far less than 200x, so only the shared-strings cap catches this one.
    settings.CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES = 100_000
    before = snapshot(stocked)
    data = xlsx([["id", "title"]] + [[f"SKU-{i}", f"Product number {i * 7919} in blue"] for i in range(5000)])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        declared = archive.getinfo("xl/sharedStrings.xml").file_size
    assert declared > 100_000
    imp = import_catalog(stocked, data, filename="catalog.xlsx", mode="full")
    assert_rejected(
        imp,
        f"the XLSX shared strings inflate to {declared:,} bytes, over the limit of 100,000 "
        "(CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES); save the sheet as CSV",
    )
    assert snapshot(stocked) == before


def test_xlsx_with_one_huge_cell_is_refused(stocked: Any, import_catalog: Any, settings: Any) -> None:
    settings.CATALOG_MAX_FIELD_BYTES = 4096
    before = snapshot(stocked)
    data = xlsx([["id", "title", "description"], ["A", "Tent", "x" * 5000]])
    imp = import_catalog(stocked, data, filename="catalog.xlsx")
    assert_rejected(
        imp,
        "the XLSX member xl/sharedStrings.xml holds a text over 4,096 characters (CATALOG_MAX_FIELD_BYTES)",
    )
    assert snapshot(stocked) == before


def test_xlsx_member_with_a_dtd_is_refused(stocked: Any, import_catalog: Any) -> None:
    doctype = '<!DOCTYPE sst [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    before = snapshot(stocked)
    imp = import_catalog(
        stocked, xlsx([["id", "title"], ["A", "Tent"]], doctype=doctype), filename="catalog.xlsx"
    )
    assert_rejected(imp, "the XLSX member xl/sharedStrings.xml declares a DTD; refusing it")
    assert snapshot(stocked) == before


def test_xml_feed_with_one_huge_text_is_refused(stocked: Any, import_catalog: Any, settings: Any) -> None:
    settings.CATALOG_MAX_FIELD_BYTES = 4096
    before = snapshot(stocked)
    feed = (
        '<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
        "<item><g:id>A</g:id><title>Tent</title><description>" + "d" * 10_000 + "</description></item>"
        "</channel></rss>"
    )
    imp = import_catalog(stocked, feed, filename="feed.xml")
    assert_rejected(imp, "the XML feed holds a text over 4,096 characters (CATALOG_MAX_FIELD_BYTES)")
    assert snapshot(stocked) == before


def test_an_ordinary_xlsx_still_imports(import_catalog: Any) -> None:
    business = BusinessFactory()
    imp = import_catalog(
        business, xlsx([["id", "title", "price"], ["A", "Tent", "9.99 EUR"]]), filename="c.xlsx"
    )
    assert (imp.state, imp.created_count) == ("succeeded", 1)


# --- JSON ------------------------------------------------------------------------------------------------------


def _feed_with_a_huge_string(path: Path, *, wrapped: bool) -> None:
    good = json.dumps({"id": "OK-1", "title": "Fine product"})
    huge = '{"id": "BIG", "title": "Big", "description": "' + "y" * (50 * 1024 * 1024) + '"}'
    path.write_text(
        ('{"meta": {"v": 1}, "products": [' if wrapped else "[")
        + good
        + ", "
        + huge
        + "]"
        + ("}" if wrapped else "")
    )


@pytest.mark.parametrize("wrapped", [False, True])
def test_json_with_a_50_mb_string_is_refused_in_bounded_memory(
    stocked: Any, import_catalog: Any, tmp_path: Path, wrapped: bool
) -> None:
    path = tmp_path / "feed.json"
    _feed_with_a_huge_string(path, wrapped=wrapped)
    before = snapshot(stocked)
    tracemalloc.start()
    try:
        imp = import_catalog(stocked, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    array = "the 'products' array" if wrapped else "the JSON array"
    assert_rejected(
        imp, f"element 2 of {array} is larger than 4,194,304 characters (CATALOG_MAX_RECORD_BYTES)"
    )
    # Element 1 was valid and written, then rolled back with the rest.
    assert snapshot(stocked) == before
    # The 50 MB string was never held (json.load would hold it, and a Python str of it, at least twice).
    assert peak < 40 * 1024 * 1024, peak


@pytest.mark.parametrize(
    "text",
    [
        '[{"id": "A", "title": "x", "attributes": ' + "[" * 100_000 + "]" * 100_000 + "}]",
        '[{"id": "A", "title": "x", "attributes": ' + "[" * 100_000,
        '{"meta": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + ', "products": []}',
        '[{"id": "A", "title": "x", "v": ' + "[" * 40 + "]" * 40 + "}]",
    ],
    ids=["deep", "deep-unclosed", "deep-wrapper-member", "just-over-32"],
)
def test_deeply_nested_json_is_refused(stocked: Any, import_catalog: Any, text: str) -> None:
    before = snapshot(stocked)
    imp = import_catalog(stocked, text, filename="feed.json")
    assert imp.state == "failed"
    assert imp.error_message.endswith("is nested more than 32 levels deep"), imp.error_message
    assert snapshot(stocked) == before


def test_wrapped_json_streams_past_other_members(import_catalog: Any) -> None:
    business = BusinessFactory()
    text = json.dumps(
        {
            "meta": {"generated": "2026-01-01", "list": [1, 2, 3]},
            "count": 2,
            "products": [{"id": "A", "title": "Tent"}, {"id": "B", "title": "Stove", "price": 12}],
            "items": [{"id": "IGNORED", "title": "not the first array"}],
        }
    )
    imp = import_catalog(business, text, filename="feed.json")
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 2, 0)
    assert sorted(Item.objects.filter(business=business).values_list("external_id", flat=True)) == ["A", "B"]


def test_json_lines_over_the_record_cap_are_row_errors(import_catalog: Any, settings: Any) -> None:
    settings.CATALOG_MAX_RECORD_BYTES = 2048
    business = BusinessFactory()
    lines = [
        json.dumps({"id": "A", "title": "Tent"}),
        json.dumps({"id": "B", "title": "Big", "description": "z" * 10_000}),
        '{"id": "C", "title": "Deep", "v": ' + "[" * 40 + "]" * 40 + "}",
        json.dumps({"id": "D", "title": "Stove"}),
    ]
    imp = import_catalog(business, "\n".join(lines) + "\n", filename="feed.jsonl")
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 2, 2)
    assert imp.error_report == [
        {"row": 2, "column": "", "reason": "line longer than 2,048 characters"},
        {"row": 3, "column": "", "reason": "nested more than 32 levels deep"},
    ]
    assert sorted(Item.objects.filter(business=business).values_list("external_id", flat=True)) == ["A", "D"]


# --- CSV and documents ------------------------------------------------------------------------------------------


def test_csv_line_over_the_record_cap_is_refused(stocked: Any, import_catalog: Any, settings: Any) -> None:
    settings.CATALOG_MAX_RECORD_BYTES = 4096
    before = snapshot(stocked)
    imp = import_catalog(stocked, "id,title\nA,Tent\nB," + "w" * 10_000 + "\n")
    assert_rejected(imp, "line 3 is longer than 4,096 characters (CATALOG_MAX_RECORD_BYTES)")
    assert snapshot(stocked) == before


def test_csv_field_over_the_field_cap_is_refused(stocked: Any, import_catalog: Any, settings: Any) -> None:
    settings.CATALOG_MAX_FIELD_BYTES = 2048
    imp = import_catalog(stocked, 'id,title\nA,"' + "line\n" * 1000 + '"\n')
    assert imp.state == "failed"
    assert "field larger than field limit (2048)" in imp.error_message


def test_faq_is_written_in_batches_and_keeps_the_vectors_of_unchanged_chunks(import_catalog: Any) -> None:
    business = BusinessFactory()
    # One heading-less document of about 3 MB: the reader emits it in sections, the writer in batches.
    paragraphs = [
        f"Paragraph {i}. Returns are accepted within {i % 60} days of delivery." for i in range(40_000)
    ]
    first = import_catalog(business, "\n\n".join(paragraphs), filename="faq.md")
    assert first.state == "succeeded"
    document = Document.objects.get(business=business)
    count = Chunk.objects.filter(document=document).count()
    assert count == first.created_count > 1000
    assert list(
        Chunk.objects.filter(document=document).order_by("ordinal").values_list("ordinal", flat=True)
    ) == list(range(count))
    vector = [0.1] * 384
    Chunk.objects.filter(document=document).update(embedding=vector, embedding_model="test-model")
    paragraphs[0] = "Paragraph 0 changed."
    second = import_catalog(business, "\n\n".join(paragraphs), filename="faq.md")
    assert (second.state, second.created_count, second.unchanged_count) == ("succeeded", 1, count - 1)
    assert second.retired_count == 1
    chunks = Chunk.objects.filter(document=document)
    assert chunks.count() == count
    assert chunks.filter(embedding__isnull=True).count() == 1
    assert chunks.get(ordinal=0).embedding is None
    assert chunks.filter(embedding_model="test-model").count() == count - 1


# --- Retention ---------------------------------------------------------------------------------------------------


def _stored_import(business: Any, state: str, finished_days_ago: float | None) -> Import:
    imp = Import(business=business, original_filename="feed.csv", state=state)
    imp.file.save("feed.csv", ContentFile(SMALL_CATALOG_CSV.encode()), save=False)
    if finished_days_ago is not None:
        imp.finished_at = timezone.now() - timedelta(days=finished_days_ago)
    imp.created_count = 3
    imp.save()
    return imp


def test_uploads_are_deleted_after_the_retention_period_and_rows_keep_their_summary(
    catalog_media: Path, settings: Any
) -> None:
    settings.CATALOG_UPLOAD_RETENTION_DAYS = 7
    business = BusinessFactory()
    old = _stored_import(business, "succeeded", 8)
    old_failed = _stored_import(business, "failed", 30)
    recent = _stored_import(business, "succeeded", 6)
    pending = _stored_import(business, "pending", None)
    running = _stored_import(business, "running", None)
    paths = {imp.pk: Path(imp.file.path) for imp in (old, old_failed, recent, pending, running)}
    assert all(p.exists() for p in paths.values())
    assert import_uploads_purge() == 2
    assert import_uploads_purge() == 0  # safe to run twice
    for imp, kept in ((old, False), (old_failed, False), (recent, True), (pending, True), (running, True)):
        imp.refresh_from_db()
        assert paths[imp.pk].exists() is kept
        assert bool(imp.file) is kept
        assert (imp.state, imp.created_count) == (imp.state, 3)


def test_an_import_whose_upload_was_purged_fails_cleanly(catalog_media: Path) -> None:
    from catalogs.services.imports import import_run

    business = BusinessFactory()
    imp = _stored_import(business, "pending", None)
    Import.objects.filter(pk=imp.pk).update(file="")
    done = import_run(import_id=imp.pk)
    assert done is not None
    assert (done.state, done.error_message) == (
        "failed",
        "the uploaded file is gone (deleted after CATALOG_UPLOAD_RETENTION_DAYS)",
    )


# --- Per-business ingest concurrency ---------------------------------------------------------------------------


def test_a_business_holds_at_most_its_share_of_ingest_workers(catalog_media: Path, settings: Any) -> None:
    settings.CATALOG_IMPORTS_PER_BUSINESS = 1
    shop_a, shop_b = BusinessFactory(), BusinessFactory()
    running_a = _stored_import(shop_a, "pending", None)
    waiting_a = _stored_import(shop_a, "pending", None)
    of_b = _stored_import(shop_b, "pending", None)
    # A's first import holds A's one slot (as it would on a worker).
    assert slots.slot_acquire(business_id=shop_a.pk, import_id=running_a.pk) is True
    try:
        # A's second import does not take a worker: nothing ran, it is still pending, the task re-queues it.
        assert slots.import_run_limited(import_id=waiting_a.pk) is False
        waiting_a.refresh_from_db()
        assert (waiting_a.state, waiting_a.started_at) == ("pending", None)
        with pytest.raises(Retry):
            run_import.run(waiting_a.pk)
        # B is not blocked by A.
        assert slots.import_run_limited(import_id=of_b.pk) is True
        of_b.refresh_from_db()
        assert (of_b.state, of_b.created_count) == ("succeeded", 3)
    finally:
        slots.slot_release(business_id=shop_a.pk, import_id=running_a.pk)
    # A's slot is free again: the re-queued import runs.
    run_import.run(waiting_a.pk)
    waiting_a.refresh_from_db()
    assert waiting_a.state == "succeeded"


def test_a_business_may_be_given_more_than_one_worker(catalog_media: Path, settings: Any) -> None:
    settings.CATALOG_IMPORTS_PER_BUSINESS = 2
    shop = BusinessFactory()
    first, second, third = (_stored_import(shop, "pending", None) for _ in range(3))
    assert slots.slot_acquire(business_id=shop.pk, import_id=first.pk)
    assert slots.slot_acquire(business_id=shop.pk, import_id=first.pk)  # the same import again: same slot
    assert slots.slot_acquire(business_id=shop.pk, import_id=second.pk)
    assert not slots.slot_acquire(business_id=shop.pk, import_id=third.pk)
    slots.slot_release(business_id=shop.pk, import_id=first.pk)
    assert slots.slot_acquire(business_id=shop.pk, import_id=third.pk)
    for imp in (second, third):
        slots.slot_release(business_id=shop.pk, import_id=imp.pk)


def test_pypdf_is_past_the_flatedecode_fix() -> None:
    import pypdf

    assert int(pypdf.__version__.split(".")[0]) >= 6
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"pypdf>=6,<8"' in pyproject
