"""XLSX workbooks: the first sheet (or a named one), read row by row with openpyxl's read-only mode.

An XLSX file is a zip archive. Before openpyxl opens it, the archive's directory is checked: a zip bomb (a
small file that inflates to gigabytes) is refused from its declared sizes, without inflating anything
(zipfile never inflates a member past its declared size: the CRC check fails first). openpyxl holds every
shared string in memory, so ``xl/sharedStrings.xml`` has its own cap
(``CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES``, and at most ``MAX_SHARED_STRINGS`` strings); then the shared
strings and the worksheets are scanned once with expat, streaming, for a text over ``CATALOG_MAX_FIELD_BYTES``
(one cell openpyxl would otherwise build whole).
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from catalogs.importers.base import FileRejected
from catalogs.importers.xmlguard import scan_xml_texts

# Spreadsheet XML compresses well, but not by more than this; a bomb's members compress by 1000x and more.
MAX_COMPRESSION_RATIO = 200
MAX_MEMBERS = 10_000
# Python keeps each shared string as an object (about 60 bytes before its text): this bounds that overhead.
MAX_SHARED_STRINGS = 1_000_000
SHARED_STRINGS = "xl/sharedStrings.xml"
_SCANNED = re.compile(r"^xl/(sharedStrings\.xml|worksheets/[^/]+\.xml)$")


def check_archive(path: Path) -> None:
    """Refuse archives that are not workbooks, or whose members would inflate past the limits."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileRejected("the file is not a valid XLSX workbook (damaged zip archive)") from exc
    if len(members) > MAX_MEMBERS:
        raise FileRejected(f"the XLSX archive has {len(members)} members; refusing it as a possible zip bomb")
    names = {m.filename for m in members}
    if "xl/workbook.xml" not in names:
        raise FileRejected("the zip archive is not an XLSX workbook (no xl/workbook.xml)")
    limit = settings.CATALOG_XLSX_MAX_UNCOMPRESSED_BYTES
    total = 0
    for member in members:
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > 1_000_000 and ratio > MAX_COMPRESSION_RATIO:
            raise FileRejected(
                f"the XLSX member {member.filename} inflates {ratio:.0f}x; refusing it as a possible zip bomb"
            )
    if total > limit:
        raise FileRejected(
            f"the XLSX workbook inflates to {total:,} bytes, over the limit of {limit:,}; refusing it as a possible zip bomb"
        )
    shared = next((m for m in members if m.filename == SHARED_STRINGS), None)
    shared_limit = settings.CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES
    if shared is not None and shared.file_size > shared_limit:
        raise FileRejected(
            f"the XLSX shared strings inflate to {shared.file_size:,} bytes, over the limit of {shared_limit:,} "
            "(CATALOG_XLSX_MAX_SHARED_STRINGS_BYTES); save the sheet as CSV"
        )
    _scan_texts(path, [m.filename for m in members if _SCANNED.match(m.filename)])


def _scan_texts(path: Path, names: list[str]) -> None:
    """Stream each member through expat: refuse a text longer than CATALOG_MAX_FIELD_BYTES or more than
    MAX_SHARED_STRINGS shared strings. Memory: one read and one text's length counter."""
    with zipfile.ZipFile(path) as archive:
        for name in names:
            _scan_member(archive, name)


def _scan_member(archive: zipfile.ZipFile, name: str) -> None:
    try:
        with archive.open(name) as member:
            scan_xml_texts(
                member,
                f"the XLSX member {name}",
                max_count=MAX_SHARED_STRINGS,
                count_tag="si" if name == SHARED_STRINGS else "",
            )
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FileRejected(f"the XLSX member {name} is damaged ({exc})") from exc


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # 12.5 stays "12.5"; 3.0 becomes "3" (openpyxl gives floats for every number).
        return format(Decimal(repr(value)).normalize(), "f") if value == value else ""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def xlsx_rows(path: Path, *, sheet: str | None = None) -> Iterator[tuple[int, list[str]]]:
    check_archive(path)
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for damaged workbooks
        raise FileRejected(f"the XLSX workbook cannot be read ({type(exc).__name__})") from exc
    try:
        if sheet:
            if sheet not in workbook.sheetnames:
                raise FileRejected(f"no sheet named {sheet!r} (sheets: {', '.join(workbook.sheetnames)})")
            worksheet = workbook[sheet]
        else:
            worksheet = workbook.worksheets[0]
        for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
            yield number, [_cell_text(v) for v in values]
    finally:
        workbook.close()
