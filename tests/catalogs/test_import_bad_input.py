"""Files that cannot be imported at all: one clear message, and nothing changes."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from catalogs.models import Import, Item
from catalogs.services.imports import ImportRejected
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db


@pytest.fixture
def stocked(import_catalog):
    """A business that already has the small catalog (3 active items)."""
    business = BusinessFactory()
    assert import_catalog(business, SMALL_CATALOG_CSV).created_count == 3
    return business


def snapshot(business):
    return sorted(
        Item.objects.filter(business=business).values_list(
            "external_id", "title", "is_active", "content_hash"
        )
    )


def assert_rejected(imp, message):
    assert (imp.state, imp.phase, imp.error_message) == ("failed", "done", message)
    assert (imp.created_count, imp.updated_count, imp.retired_count, imp.rows_done) == (0, 0, 0, 0)


def test_binary_file(stocked, import_catalog):
    before = snapshot(stocked)
    imp = import_catalog(stocked, os.urandom(64) + b"\x00\x01" * 100, filename="catalog.csv", mode="full")
    assert_rejected(
        imp, "the file is binary, not a catalog (CSV, TSV, JSON, XLSX, XML, Markdown, text or PDF)"
    )
    assert snapshot(stocked) == before


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (
            b"BZh91AY&SYrest",
            "feed.csv.bz2",
            "compressed files are not accepted (except .gz): upload the CSV, XML or XLSX inside",
        ),
        (
            b"\x1f\x8b\x08\x00rest",
            "feed.csv.gz",
            "the gzip file is damaged (Compressed file ended before the end-of-stream marker was reached)",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "old.xls",
            "legacy Excel .xls files are not accepted: save the sheet as .xlsx or .csv",
        ),
        (
            b"<!DOCTYPE html><html><body>Login</body></html>",
            "feed.xml",
            "the file is an HTML page, not a feed",
        ),
        (b"id,title\n1,x\n", "feed.pdf", "the file's content does not match its PDF extension"),
        (b"   \n", "empty.csv", "the file is empty"),
    ],
)
def test_wrong_type(stocked, import_catalog, data, filename, message):
    before = snapshot(stocked)
    imp = import_catalog(stocked, data, filename=filename, mode="full")
    assert_rejected(imp, message)
    assert snapshot(stocked) == before


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><g:title>&lol9;</g:title></item></channel></rss>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><g:title>&secret;</g:title></item></channel></rss>
"""


@pytest.mark.parametrize(
    "document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["entity-expansion", "external-entity"]
)
def test_unsafe_xml_is_refused(stocked, import_catalog, document):
    before = snapshot(stocked)
    imp = import_catalog(stocked, document, filename="feed.xml", mode="full")
    assert_rejected(imp, "the XML declares a document type or entities; refused (entity expansion attack?)")
    assert snapshot(stocked) == before
    assert not Item.objects.filter(external_id="1").exists()


def test_xml_that_is_not_a_feed(stocked, import_catalog):
    imp = import_catalog(
        stocked, "<?xml version='1.0'?><invoice><total>3</total></invoice>", filename="x.xml"
    )
    assert_rejected(imp, "the XML document is not an RSS or Atom feed (root <invoice>)")


def xlsx_bomb(settings) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        # 20 MB of zeros deflate to ~20 KB: a 1000x ratio that no spreadsheet has.
        archive.writestr("xl/worksheets/sheet1.xml", b"\x00" * (20 * 1024 * 1024))
    return out.getvalue()


def test_xlsx_zip_bomb_by_ratio(stocked, import_catalog, settings):
    before = snapshot(stocked)
    data = xlsx_bomb(settings)
    assert len(data) < 100_000
    imp = import_catalog(stocked, data, filename="catalog.xlsx", mode="full")
    assert imp.state == "failed"
    assert imp.error_message.startswith("the XLSX member xl/worksheets/sheet1.xml inflates ")
    assert imp.error_message.endswith("x; refusing it as a possible zip bomb")
    assert snapshot(stocked) == before


def test_xlsx_over_the_uncompressed_limit(stocked, import_catalog, settings):
    settings.CATALOG_XLSX_MAX_UNCOMPRESSED_BYTES = 1000
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>" + " " * 2000)
    imp = import_catalog(stocked, out.getvalue(), filename="catalog.xlsx")
    assert_rejected(
        imp,
        "the XLSX workbook inflates to 2,011 bytes, over the limit of 1,000; refusing it as a possible zip bomb",
    )


def test_zip_that_is_not_a_workbook(stocked, import_catalog):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("catalog.csv", "id,title\n1,x\n")
    imp = import_catalog(stocked, out.getvalue(), filename="catalog.zip")
    assert_rejected(imp, "the zip archive is not an XLSX workbook (no xl/workbook.xml)")


def test_oversize_upload_is_refused_before_anything_is_stored(stocked, import_catalog, settings):
    settings.CATALOG_MAX_UPLOAD_BYTES = 100
    before = snapshot(stocked)
    imports_before = Import.objects.count()
    with pytest.raises(ImportRejected) as excinfo:
        import_catalog(stocked, SMALL_CATALOG_CSV, mode="full")
    assert (
        str(excinfo.value)
        == f"the file is {len(SMALL_CATALOG_CSV.encode()):,} bytes, over the limit of 100 bytes"
    )
    assert Import.objects.count() == imports_before
    assert snapshot(stocked) == before


def test_full_sync_of_a_file_without_one_valid_row_is_refused(stocked, import_catalog):
    before = snapshot(stocked)
    imp = import_catalog(stocked, "id,title\n,no id\n", mode="full")
    assert_rejected(imp, "full sync refused: the file has no valid item, it would retire the whole catalog")
    assert snapshot(stocked) == before
